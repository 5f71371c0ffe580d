#include "runtime/matmul.h"

#include <algorithm>
#include <cassert>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <span>
#include <vector>

#include "runtime/matmul_hook.h"
#include "runtime/quant/decode.h"
#include "runtime/quant/gemm.h"
#include "runtime/quant/quant.h"
#include "schema/quant_types.h"

namespace fqpack::runtime {
namespace {

// Weight bytes a row block of the batched path aims for: small enough to
// stay in L2 while every token tile runs over it, large enough to amortize
// the tile loop.
constexpr size_t kRowBlockBytes = size_t{128} << 10;
// Decode (one token) reads each weight row once, so a matmul's time is its
// bytes over the memory bandwidth. Below this many weight bytes it runs on
// the calling thread alone: handing half of it to a worker that is spinning
// (schema/thread_pool.h) costs about a microsecond of cache-line traffic,
// about what one thread needs to read 64 KB. (With a pool whose workers
// slept between matmuls the break-even was near 384 KB.)
constexpr size_t kMinParallelDecodeBytes = size_t{64} << 10;
// Shares per thread of a decode step (DecodeParts): a few, so a worker that
// wakes late takes fewer of them and no thread idles at the end. With at
// most four per thread, ParallelFor hands them out one at a time.
constexpr int64_t kDecodeSharesPerThread = 4;
// Tokens from which activation conversion is split over the pool.
constexpr int64_t kParallelConvertTokens = 16;

// The calling thread's buffer for converted activations.
uint8_t* ActivationScratch(size_t bytes) {
  thread_local std::vector<uint8_t> buffer;
  if (buffer.size() < bytes) buffer.resize(bytes);
  return buffer.data();
}

// `bytes` of `buffer` starting at a cache line: the GEMM reads its panels
// one zmm (64 bytes) at a time, and a load split over two lines costs two;
// aligned, the speed no longer depends on where the heap put the buffer.
uint8_t* CacheLineAligned(std::vector<uint8_t>& buffer, size_t bytes) {
  constexpr size_t kLine = 64;
  if (buffer.size() < bytes + kLine) buffer.resize(bytes + kLine);
  const auto address = reinterpret_cast<uintptr_t>(buffer.data());
  return buffer.data() + ((kLine - address % kLine) % kLine);
}

// The calling thread's buffer for activation tiles of the GEMM path.
uint8_t* TileScratch(size_t bytes) {
  thread_local std::vector<uint8_t> buffer;
  return CacheLineAligned(buffer, bytes);
}

// The running thread's buffer for one packed weight panel of the GEMM path.
uint8_t* PanelScratch(size_t bytes) {
  thread_local std::vector<uint8_t> buffer;
  return CacheLineAligned(buffer, bytes);
}

// ParallelFor on the pool, or inline when there is none.
void ForRange(ThreadPool* pool, int64_t n, const std::function<void(int64_t, int64_t)>& fn,
              int64_t min_chunk = 1) {
  if (pool == nullptr) {
    if (n > 0) fn(0, n);
    return;
  }
  pool->ParallelFor(n, fn, min_chunk);
}

// The batched path on the kAvx512 tier (runtime/quant/gemm.h): the
// converted activations are packed once into tiles of kGemmTokens tokens;
// each work item packs one panel of kGemmRows weight rows into its thread's
// buffer (a few hundred KB at most, so it stays in L2) and runs every tile
// of its token range over it. Work items are (panel, token range) as in the
// per-row path: tokens are split only when there are too few panels to feed
// every thread, since a split packs the panel once per range.
void GemmBatched(const quant::GemmOps& ops, const WeightView& w, const uint8_t* act,
                 size_t act_stride, int64_t n_tokens, float* y, ThreadPool* pool) {
  const int64_t cols = w.cols, rows = w.rows;
  const int64_t n_tiles = (n_tokens + quant::kGemmTokens - 1) / quant::kGemmTokens;
  const size_t tile_bytes = ops.tile_bytes(cols);
  uint8_t* tiles = TileScratch(tile_bytes * static_cast<size_t>(n_tiles));
  const auto pack_tiles = [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) {
      const int64_t t0 = i * quant::kGemmTokens;
      const int nt = static_cast<int>(std::min<int64_t>(quant::kGemmTokens, n_tokens - t0));
      ops.pack_acts(act + t0 * act_stride, act_stride, nt, cols, tiles + i * tile_bytes);
    }
  };
  if (n_tokens >= kParallelConvertTokens) {
    ForRange(pool, n_tiles, pack_tiles);
  } else {
    pack_tiles(0, n_tiles);
  }

  const int64_t n_panels = (rows + quant::kGemmRows - 1) / quant::kGemmRows;
  const int64_t items_wanted = int64_t{4} * (pool != nullptr ? pool->size() : 1);
  const int64_t n_parts = std::clamp<int64_t>((items_wanted + n_panels - 1) / n_panels, 1, n_tiles);
  const int64_t tiles_per_part = (n_tiles + n_parts - 1) / n_parts;
  const size_t panel_bytes = ops.panel_bytes(cols);
  ForRange(pool, n_panels * n_parts, [&](int64_t i0, int64_t i1) {
    uint8_t* panel = PanelScratch(panel_bytes);
    int64_t packed = -1;
    for (int64_t item = i0; item < i1; ++item) {
      const int64_t p = item / n_parts;
      const int64_t r0 = p * quant::kGemmRows;
      const int nrows = static_cast<int>(std::min<int64_t>(quant::kGemmRows, rows - r0));
      if (p != packed) {
        ops.pack_weights(w.data + r0 * w.row_bytes, w.row_bytes, nrows, cols, panel);
        packed = p;
      }
      const int64_t tile_end = std::min(n_tiles, (item % n_parts + 1) * tiles_per_part);
      for (int64_t i = (item % n_parts) * tiles_per_part; i < tile_end; ++i) {
        const int64_t t0 = i * quant::kGemmTokens;
        const int nt = static_cast<int>(std::min<int64_t>(quant::kGemmTokens, n_tokens - t0));
        ops.kernel(panel, tiles + i * tile_bytes, cols, nrows, nt, y + t0 * rows + r0,
                   static_cast<size_t>(rows));
      }
    }
  });
}

// One matrix of a decode step: its rows run by the type's decode kernel
// against the activation packed for it (`packed`), or by the per-row dot
// against the converted activation (`act`).
struct DecodePart {
  const WeightView* w;
  const quant::DecodeOps* ops;  // null: the per-row dot
  quant::DotFn dot;
  uint32_t act_type;  // the activation's type (vec_dot_type)
  const uint8_t* act = nullptr;
  size_t act_stride = 0;
  const uint8_t* packed = nullptr;
  float* y;
  size_t first_byte;  // where its bytes start in the parts' concatenation

  void Run(int64_t r0, int64_t r1) const {
    if (ops != nullptr) {
      ops->rows(w->cols, w->data + r0 * w->row_bytes, w->row_bytes, r1 - r0, packed, y + r0);
      return;
    }
    for (int64_t r = r0; r < r1; ++r)
      dot(w->cols, w->data + r * w->row_bytes, act, act_stride, 1, y + r);
  }
};

// A row boundary in the concatenation of the parts: row `row` of part
// `part` (row == rows: the part's end).
struct RowPos {
  size_t part;
  int64_t row;
};

// The row boundary nearest to byte `byte` of the concatenation, at a
// multiple of the part's kernel's row group (or the part's end).
RowPos PosAt(std::span<const DecodePart> parts, double byte) {
  size_t i = 0;
  while (i + 1 < parts.size() && byte >= static_cast<double>(parts[i + 1].first_byte)) ++i;
  const DecodePart& p = parts[i];
  const int64_t group = p.ops != nullptr ? p.ops->row_group : 1;
  const double groups = (byte - static_cast<double>(p.first_byte)) /
                        static_cast<double>(p.w->row_bytes) / static_cast<double>(group);
  return {i, std::clamp<int64_t>(std::llround(groups) * group, 0, p.w->rows)};
}

// Every row from `a` up to `b`.
void RunSpan(std::span<const DecodePart> parts, RowPos a, RowPos b) {
  for (size_t i = a.part; i <= b.part && i < parts.size(); ++i) {
    const int64_t r0 = i == a.part ? a.row : 0;
    const int64_t r1 = i == b.part ? b.row : parts[i].w->rows;
    if (r0 < r1) parts[i].Run(r0, r1);
  }
}

// y = W x for one token through every part: the decode path. All parts run
// in one parallel loop over their bytes, so matrices that share an input
// (Q, K and V; gate and up) cost one hand-off to the pool, and small ones
// (K and V under grouped-query attention) no longer each pay for a loop of
// their own. The shares shrink geometrically, each 1 - 1/(2T) of the one
// before for T threads (guided scheduling): the first are large, so a
// thread streams long runs of rows, and the last small, so the thread
// that finishes first waits little for the others (1.03-1.09x the speed of
// equal shares for one matrix on 2 threads, the two alternating in one
// process).
void DecodeParts(std::span<const DecodePart> parts, size_t total_bytes, ThreadPool* pool) {
  const RowPos end{parts.size() - 1, parts.back().w->rows};
  if (pool == nullptr || pool->size() == 1 || total_bytes < kMinParallelDecodeBytes) {
    RunSpan(parts, {0, 0}, end);
    return;
  }
  const int threads = pool->size();
  const int64_t shares = DecodeShareCount(threads);
  const auto bound = [&](int64_t s) {
    if (s >= shares) return end;
    return PosAt(parts, static_cast<double>(total_bytes) * DecodeShareStart(s, threads));
  };
  pool->ParallelFor(shares, [&](int64_t s0, int64_t s1) { RunSpan(parts, bound(s0), bound(s1)); });
}

// The decode path of MatMulSameInput (and MatMul): x converted once per
// activation type and, on the kAvx512 tier, packed once per decode kernel
// (runtime/quant/decode.h), on the calling thread; then DecodeParts.
void DecodeStep(std::span<const WeightView> ws, const float* x, std::span<float* const> ys,
                ThreadPool* pool) {
  assert(!ws.empty() && ws.size() <= kMaxSameInput && ys.size() == ws.size());
  // The calling thread's buffers: [0][i] the converted activation of part
  // i, [1][i] its packed one (used only where no earlier part's serves).
  thread_local std::vector<uint8_t> buffers[2][kMaxSameInput];
  DecodePart parts[kMaxSameInput];
  size_t bytes = 0;
  for (size_t i = 0; i < ws.size(); ++i) {
    const WeightView& w = ws[i];
    const quant::TypeTraits* traits = quant::FindTraits(w.type);
    assert(traits != nullptr && traits->dot != nullptr);
    DecodePart& p = parts[i];
    p = DecodePart{.w = &w,
                   .ops = quant::BestDecode(*traits),
                   .dot = quant::BestDot(*traits),
                   .act_type = traits->vec_dot_type,
                   .y = ys[i],
                   .first_byte = bytes};
    bytes += static_cast<size_t>(w.rows) * w.row_bytes;
    const uint32_t act_type = p.act_type;
    p.act_stride = static_cast<size_t>(RowBytes(act_type, static_cast<uint64_t>(w.cols)).value());
    for (size_t j = 0; j < i && p.act == nullptr; ++j) {
      if (parts[j].act_type == act_type) p.act = parts[j].act;
    }
    if (p.act == nullptr && act_type == ToId(QType::kF32)) {
      p.act = reinterpret_cast<const uint8_t*>(x);
    } else if (p.act == nullptr) {
      uint8_t* act = CacheLineAligned(buffers[0][i], p.act_stride);
      quant::BestQuantize (*quant::FindTraits(act_type))(x, act, w.cols);
      p.act = act;
    }
    if (p.ops == nullptr) continue;
    for (size_t j = 0; j < i && p.packed == nullptr; ++j) {
      if (parts[j].ops == p.ops) p.packed = parts[j].packed;
    }
    if (p.packed == nullptr) {
      // pack_act writes whole zmm, so the buffer starts at a cache line.
      uint8_t* packed = CacheLineAligned(buffers[1][i], p.ops->act_bytes(w.cols));
      p.ops->pack_act(w.cols, p.act, packed);
      p.packed = packed;
    }
  }
  DecodeParts(std::span<const DecodePart>(parts, ws.size()), bytes, pool);
}

}  // namespace

int64_t DecodeShareCount(int threads) { return int64_t{threads} * kDecodeSharesPerThread; }

double DecodeShareStart(int64_t share, int threads) {
  const int64_t shares = DecodeShareCount(threads);
  if (share >= shares) return 1.0;
  const double ratio = 1.0 - 1.0 / static_cast<double>(2 * threads);
  return (1.0 - std::pow(ratio, share)) / (1.0 - std::pow(ratio, shares));
}

bool CanExecute(uint32_t type) { return quant::IsExecutable(type); }

Status CheckExecutable(uint32_t type, const std::string& tensor) {
  if (CanExecute(type)) return Status::OK();
  return Status::NotSupported((tensor.empty() ? "" : "tensor '" + tensor + "': ") + "type " +
                              QTypeName(type) + " cannot be executed");
}

Status CheckWeight(const WeightView& w, const std::string& tensor) {
  FQ_RETURN_IF_ERROR(CheckExecutable(w.type, tensor));
  const std::string where = tensor.empty() ? "" : "tensor '" + tensor + "': ";
  if (w.cols <= 0 || w.rows < 0) {
    return Status::InvalidArgument(where + "bad shape " + std::to_string(w.cols) + "x" +
                                   std::to_string(w.rows));
  }
  const uint32_t act_type = quant::FindTraits(w.type)->vec_dot_type;
  for (uint32_t type : {w.type, act_type}) {
    Result<uint64_t> bytes = RowBytes(type, static_cast<uint64_t>(w.cols));
    if (!bytes.ok()) {
      return Status::InvalidArgument(where + QTypeName(w.type) +
                                     " weights: " + bytes.status().message());
    }
    if (type == w.type && w.row_bytes < *bytes) {
      return Status::InvalidArgument(where + "row stride " + std::to_string(w.row_bytes) +
                                     " is shorter than a row (" + std::to_string(*bytes) +
                                     " bytes)");
    }
  }
  if (w.rows > 0 && w.data == nullptr) return Status::InvalidArgument(where + "no data");
  return Status::OK();
}

void MatMul(const WeightView& w, const float* x, int64_t n_tokens, float* y, ThreadPool* pool) {
  if (n_tokens <= 0 || w.rows <= 0) return;
  if (MatMulObserver* observer = CurrentMatMulObserver()) observer->OnMatMul(w, x, n_tokens);
  if (n_tokens == 1) {
    DecodeStep(std::span<const WeightView>(&w, 1), x, std::span<float* const>(&y, 1), pool);
    return;
  }
  const quant::TypeTraits* traits = quant::FindTraits(w.type);
  assert(traits != nullptr && traits->dot != nullptr);
  const quant::DotFn dot = quant::BestDot(*traits);
  const int64_t cols = w.cols, rows = w.rows;

  // Activations in the weight type's vec_dot_type, one row per token.
  const uint8_t* act;
  size_t act_stride;
  if (traits->vec_dot_type == ToId(QType::kF32)) {
    act = reinterpret_cast<const uint8_t*>(x);
    act_stride = static_cast<size_t>(cols) * sizeof(float);
  } else {
    const quant::QuantizeRowFn quantize =
        quant::BestQuantize(*quant::FindTraits(traits->vec_dot_type));
    Result<uint64_t> row_bytes = RowBytes(traits->vec_dot_type, static_cast<uint64_t>(cols));
    assert(row_bytes.ok());
    act_stride = static_cast<size_t>(*row_bytes);
    uint8_t* buffer = ActivationScratch(act_stride * static_cast<size_t>(n_tokens));
    const auto convert = [&](int64_t t0, int64_t t1) {
      for (int64_t t = t0; t < t1; ++t) {
        quantize(x + t * cols, buffer + t * act_stride, cols);
      }
    };
    if (n_tokens >= kParallelConvertTokens) {
      ForRange(pool, n_tokens, convert);
    } else {
      convert(0, n_tokens);
    }
    act = buffer;
  }

  const uint8_t* data = w.data;
  const size_t row_bytes = w.row_bytes;

  // Below two tiles the GEMM's panel packing is not paid back: at 2 and 4
  // tokens it runs at a third to a half of the per-row dots' speed, at 8 at
  // 0.7x-1.2x, from 16 on ahead (kernels_bench, GemmVsAvx2).
  if (traits->gemm != nullptr && n_tokens >= quant::kGemmMinTokens &&
      quant::ActiveSimdLevel() >= quant::SimdLevel::kAvx512 &&
      cols % traits->gemm->cols_multiple == 0) {
    GemmBatched(*traits->gemm, w, act, act_stride, n_tokens, y, pool);
    return;
  }

  // Batched: a block of rows stays in cache while all token tiles pass over
  // it; within a tile each weight row is decoded once for up to
  // kMaxDotTokens tokens. Work items are (row block, token range); tokens
  // are split only when a matrix has too few rows to feed every thread.
  const int64_t items_wanted = int64_t{4} * (pool != nullptr ? pool->size() : 1);
  int64_t block_rows = std::clamp<int64_t>(
      static_cast<int64_t>(kRowBlockBytes / std::max<size_t>(1, row_bytes)), 4, 256);
  block_rows = std::min(block_rows, std::max<int64_t>(4, (rows + items_wanted - 1) / items_wanted));
  const int64_t n_row_blocks = (rows + block_rows - 1) / block_rows;
  const int64_t n_tiles = (n_tokens + quant::kMaxDotTokens - 1) / quant::kMaxDotTokens;
  const int64_t n_token_parts =
      std::clamp<int64_t>((items_wanted + n_row_blocks - 1) / n_row_blocks, 1, n_tiles);
  const int64_t tiles_per_part = (n_tiles + n_token_parts - 1) / n_token_parts;
  ForRange(pool, n_row_blocks * n_token_parts, [&](int64_t i0, int64_t i1) {
    float out[quant::kMaxDotTokens];
    for (int64_t item = i0; item < i1; ++item) {
      const int64_t r_begin = (item / n_token_parts) * block_rows;
      const int64_t r_end = std::min(rows, r_begin + block_rows);
      const int64_t t_begin = (item % n_token_parts) * tiles_per_part * quant::kMaxDotTokens;
      const int64_t t_end = std::min(n_tokens, t_begin + tiles_per_part * quant::kMaxDotTokens);
      for (int64_t t0 = t_begin; t0 < t_end; t0 += quant::kMaxDotTokens) {
        const int nt = static_cast<int>(std::min<int64_t>(quant::kMaxDotTokens, t_end - t0));
        const uint8_t* act_tile = act + t0 * act_stride;
        float* y_tile = y + t0 * rows;
        for (int64_t r = r_begin; r < r_end; ++r) {
          dot(cols, data + r * row_bytes, act_tile, act_stride, nt, out);
          for (int i = 0; i < nt; ++i) y_tile[i * rows + r] = out[i];
        }
      }
    }
  });
}

void MatMulSameInput(std::span<const WeightView> ws, const float* x, int64_t n_tokens,
                     std::span<float* const> ys, ThreadPool* pool) {
  assert(ws.size() == ys.size());
  if (ws.empty() || n_tokens <= 0) return;
  if (n_tokens != 1 || ws.size() > kMaxSameInput) {
    for (size_t i = 0; i < ws.size(); ++i) MatMul(ws[i], x, n_tokens, ys[i], pool);
    return;
  }
  for (const WeightView& w : ws) {
    assert(w.cols == ws[0].cols);
    if (MatMulObserver* observer = CurrentMatMulObserver()) observer->OnMatMul(w, x, n_tokens);
  }
  DecodeStep(ws, x, ys, pool);
}

void GetRows(const WeightView& w, const int32_t* rows_idx, int64_t n, float* dst) {
  const quant::TypeTraits* traits = quant::FindTraits(w.type);
  assert(traits != nullptr);
  for (int64_t i = 0; i < n; ++i) {
    assert(rows_idx[i] >= 0 && rows_idx[i] < w.rows);
    traits->dequantize(w.data + static_cast<int64_t>(rows_idx[i]) * w.row_bytes, dst + i * w.cols,
                       w.cols);
  }
}

}  // namespace fqpack::runtime
