// The k-quant decode kernels of the kAvx512Gfni tier (decode.h): compiled
// with GFNI as well, they move bit fields with vgf2p8affineqb. The kernels
// are in decode_kquants_avx512.inc.
#define FQPACK_DECODE_GFNI 1
#include "runtime/quant/decode_kquants_avx512.inc"
