// The group-int decode kernels of the kAvx512Gfni tier: compiled with GFNI
// as well, they move bit fields with vgf2p8affineqb. The code is in
// group_int_avx512.inc.
#define FQPACK_GROUP_INT_GFNI 1
#include "runtime/quant/group_int_avx512.inc"
