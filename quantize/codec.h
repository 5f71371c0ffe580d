// Block codecs: how `fqpack quantize` turns float weights into one block of
// a quantized type. Both quantizers use them: RTN fits each block and rounds
// every weight to its nearest code; GPTQ fits a block when it reaches the
// block's first column and then rounds column by column, feeding each
// rounding error forward.
//
// A fit chooses the block's scales (and offsets) to minimise the squared
// error of the block's weights with nearest codes, searching candidate
// scales and refitting each by least squares, rather than taking min/max or
// absmax. For the k-quants the sub-block scales are then themselves
// quantized (6 or 4 bits, or int8 for Q6_K) and each sub-block's integer
// scale (and min) is moved by one step where that lowers the error.
//
// Byte layouts are those of schema/quant_types.md (ggml's for the GGUF
// types), so every block decodes with runtime/quant's dequantizers.
//
// Which grid a type takes, its code range and its encoder are the type's row
// in the quant type table (runtime/quant/quant.h); this file has no list of
// types of its own.
//
// Thread-safety: codecs are immutable singletons; all methods reentrant.
#ifndef FQPACK_QUANTIZE_CODEC_H_
#define FQPACK_QUANTIZE_CODEC_H_

#include <cstddef>
#include <cstdint>
#include <string>

#include "runtime/quant/quant.h"

namespace fqpack::quantize {

constexpr int kMaxBlockElems = 256;
constexpr int kMaxSubBlocks = runtime::quant::kMaxSubBlocks;

// What one block can represent once its scales are chosen: element e takes
//   scale[s] * level(q) + offset[s],  s = e / sub_len,  q in [qmin, qmax],
// where level(q) = q, or levels[q - qmin] for a non-uniform grid (IQ4_NL).
// The products are formed in the order the runtime's dequantizer forms them,
// so Value() is the weight the runtime will see. The stored fields for the
// encoder (BlockFields: fp16 bits of the block scale(s), the integer
// sub-block scales and mins of the k-quants, n) are the base.
struct BlockGrid : runtime::quant::BlockFields {
  int sub_len = 0;  // elements per sub-block (n for one-scale blocks)
  int qmin = 0;
  int qmax = 0;
  const int8_t* levels = nullptr;
  float scale[kMaxSubBlocks] = {};
  float offset[kMaxSubBlocks] = {};

  // The nearest representable value's code for weight x at element e.
  int Nearest(int e, float x) const;
  float Value(int e, int q) const;
};

// The codec of one type: the searches of its row's CodecShape and the row's
// encoder (runtime/quant/quant.h).
class BlockCodec {
 public:
  explicit BlockCodec(const runtime::quant::TypeTraits* traits) : traits_(traits) {}

  uint32_t type() const { return traits_->type; }
  // Elements per block: the group size for group-int types, QK otherwise.
  int block_elems() const { return static_cast<int>(traits_->block_elems); }
  // True when a row of `cols` weights is a whole number of blocks (always
  // for group-int types, whose last group may be shorter).
  bool FitsRow(int64_t cols) const;
  // Bytes of a block of n elements (n < block_elems only for group-int).
  size_t BlockBytes(int n) const;

  // Chooses the scales of the block x[0..n) (n == block_elems, or less for
  // a group-int row's last group) minimising sum wt[e] (x[e] - value[e])^2;
  // `wt` null weighs every element 1.
  void Fit(const float* x, int n, const float* wt, BlockGrid* grid) const;
  // Writes the block: codes q[0..grid.n) in [grid.qmin, grid.qmax].
  void Encode(const BlockGrid& grid, const int* q, uint8_t* out) const {
    traits_->encode(grid, q, out);
  }

 private:
  // Fit with importances (never null).
  void FitWeighted(const float* x, const float* wt, int n, BlockGrid* grid) const;

  const runtime::quant::TypeTraits* traits_;
};

// The codec of `type`, or nullptr when fqpack cannot quantize to it: codecs
// exist for every row of the type table whose CodecShape is not kNone (every
// group-int type and the GGUF types CodecTypeNames lists).
const BlockCodec* FindCodec(uint32_t type);

// The GGUF types fqpack quantizes to, most bits per weight first:
// "Q8_0, Q6_K, ...", for messages.
std::string CodecTypeNames();

}  // namespace fqpack::quantize

#endif  // FQPACK_QUANTIZE_CODEC_H_
