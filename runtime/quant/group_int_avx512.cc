// The group-int dots and decode kernels of the kAvx512 tier; the code is in
// group_int_avx512.inc.
#include "runtime/quant/group_int_avx512.inc"
