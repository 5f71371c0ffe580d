// Checked arithmetic for every offset, length and count that comes from a
// file (GGUF headers, .fqpack footers and index rows, store index rows, zstd
// frames). A crafted file controls these numbers, so a plain `a + b` or
// `a * b` may wrap and turn a bounds check into a pass; every reader does its
// sums through these helpers instead, and bounds what a header may make it
// allocate with an AllocationLimit.
#ifndef FQPACK_SCHEMA_CHECKED_H_
#define FQPACK_SCHEMA_CHECKED_H_

#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <limits>

namespace fqpack {

// out = a + b; false when that would overflow (out is then unspecified).
[[nodiscard]] inline bool CheckedAdd(uint64_t a, uint64_t b, uint64_t* out) {
  return !__builtin_add_overflow(a, b, out);
}

// out = a * b; false when that would overflow.
[[nodiscard]] inline bool CheckedMul(uint64_t a, uint64_t b, uint64_t* out) {
  return !__builtin_mul_overflow(a, b, out);
}

// out = the sum of all terms; false when any partial sum overflows.
[[nodiscard]] inline bool CheckedSum(std::initializer_list<uint64_t> terms, uint64_t* out) {
  uint64_t s = 0;
  for (uint64_t t : terms) {
    if (!CheckedAdd(s, t, &s)) return false;
  }
  *out = s;
  return true;
}

// True when [offset, offset + length) lies inside [0, size). Never wraps:
// the test is done by subtraction from the known-good size.
[[nodiscard]] inline bool RangeInside(uint64_t offset, uint64_t length, uint64_t size) {
  return offset <= size && length <= size - offset;
}

// Rounds v up to a multiple of align (align > 0); false on overflow.
[[nodiscard]] inline bool AlignUp(uint64_t v, uint64_t align, uint64_t* out) {
  const uint64_t rem = v % align;
  if (rem == 0) {
    *out = v;
    return true;
  }
  return CheckedAdd(v, align - rem, out);
}

// A signed value read from a file (an SQLite integer column) as an unsigned
// one; false when negative.
[[nodiscard]] inline bool NonNegative(int64_t v, uint64_t* out) {
  if (v < 0) return false;
  *out = static_cast<uint64_t>(v);
  return true;
}

// A 64-bit count or size as a size_t for an allocation or a span; false when
// it does not fit this machine's address space.
[[nodiscard]] inline bool FitsSize(uint64_t v, size_t* out) {
  if (v > std::numeric_limits<size_t>::max()) return false;
  *out = static_cast<size_t>(v);
  return true;
}

// What a reader may allocate on the word of a file: a budget in bytes fixed
// from the bytes actually present (say, k times the header's size). Each
// allocation a count read from the file asks for is charged first; a charge
// that would exceed the budget fails, and the reader reports Corruption
// instead of asking the allocator for gigabytes (which would surface as
// bad_alloc, an abort, or the OOM killer).
class AllocationLimit {
 public:
  explicit AllocationLimit(uint64_t limit) : left_(limit) {}

  // Charges count * elem_bytes; false (and nothing charged) when the product
  // overflows or exceeds what is left.
  [[nodiscard]] bool Charge(uint64_t count, uint64_t elem_bytes) {
    uint64_t n;
    if (!CheckedMul(count, elem_bytes, &n) || n > left_) return false;
    left_ -= n;
    return true;
  }
  uint64_t left() const { return left_; }

 private:
  uint64_t left_;
};

}  // namespace fqpack

#endif  // FQPACK_SCHEMA_CHECKED_H_
