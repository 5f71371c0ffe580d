// The k-quant decode kernels of the kAvx512 tier (decode.h): shifts and
// masks unpack the codes. The kernels are in decode_kquants_avx512.inc.
#include "runtime/quant/decode_kquants_avx512.inc"
