// Compiled as part of the store layer (linked to fqpack_store only), this
// file includes a header of a higher layer; tests/CMakeLists.txt checks that
// the compiler refuses it. Never part of a default build.
#include "search/tree_search.h"
