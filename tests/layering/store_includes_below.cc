// The control for store_includes_search.cc: the same compile, as part of the
// store layer, of headers the store may use, must succeed.
#include "schema/status.h"
#include "store/store.h"
