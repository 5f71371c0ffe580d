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
// Thread-safety: codecs are immutable singletons; all methods reentrant.
#ifndef FQPACK_RUNTIME_QUANTIZE_CODEC_H_
#define FQPACK_RUNTIME_QUANTIZE_CODEC_H_

#include <cstddef>
#include <cstdint>

namespace fqpack::runtime::quantize {

constexpr int kMaxBlockElems = 256;
constexpr int kMaxSubBlocks = 16;

// What one block can represent once its scales are chosen: element e takes
//   scale[s] * level(q) + offset[s],  s = e / sub_len,  q in [qmin, qmax],
// where level(q) = q, or levels[q - qmin] for a non-uniform grid (IQ4_NL).
// The products are formed in the order the runtime's dequantizer forms them,
// so Value() is the weight the runtime will see.
struct BlockGrid {
  int n = 0;        // elements in the block
  int sub_len = 0;  // elements per sub-block (n for one-scale blocks)
  int qmin = 0;
  int qmax = 0;
  const int8_t* levels = nullptr;
  float scale[kMaxSubBlocks] = {};
  float offset[kMaxSubBlocks] = {};
  // Stored fields for Encode: fp16 bits of the block scale(s), and the
  // integer sub-block scales and mins of the k-quants.
  uint16_t d = 0;
  uint16_t m = 0;  // dmin of the k-quants, the offset of Q4_1/Q5_1/group-int
  int sc[kMaxSubBlocks] = {};
  int mn[kMaxSubBlocks] = {};

  // The nearest representable value's code for weight x at element e.
  int Nearest(int e, float x) const;
  float Value(int e, int q) const;
};

class BlockCodec {
 public:
  virtual ~BlockCodec() = default;

  uint32_t type() const { return type_; }
  // Elements per block: the group size for group-int types, QK otherwise.
  int block_elems() const { return block_elems_; }
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
  virtual void Encode(const BlockGrid& grid, const int* q, uint8_t* out) const = 0;

 protected:
  BlockCodec(uint32_t type, int block_elems) : type_(type), block_elems_(block_elems) {}
  // Fit with importances (never null).
  virtual void FitWeighted(const float* x, const float* wt, int n, BlockGrid* grid) const = 0;

 private:
  uint32_t type_;
  int block_elems_;
};

// The codec of `type`, or nullptr when fqpack cannot quantize to it. Codecs
// exist for every group-int type and for Q4_0, Q4_1, Q5_0, Q5_1, Q8_0,
// IQ4_NL, Q2_K, Q3_K, Q4_K, Q5_K and Q6_K.
const BlockCodec* FindCodec(uint32_t type);

}  // namespace fqpack::runtime::quantize

#endif  // FQPACK_RUNTIME_QUANTIZE_CODEC_H_
