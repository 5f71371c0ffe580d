// SHA-256 (FIPS 180-4), used to fingerprint source checkpoints so that the
// store can tell a re-import of the same file from a different file.
#ifndef FQPACK_SCHEMA_SHA256_H_
#define FQPACK_SCHEMA_SHA256_H_

#include <array>
#include <cstdint>
#include <string>

#include "schema/coding.h"

namespace fqpack {

class Sha256 {
 public:
  Sha256();
  void Update(ByteSpan data);
  std::array<uint8_t, 32> Finish();
  // Lower-case hex of the digest of `data`.
  static std::string HexOf(ByteSpan data);

  // Whether the SHA-NI path is in use; tests switch it off to check the
  // two paths against each other.
  static bool accelerated() { return use_accel_; }
  static void set_accelerated(bool on) { use_accel_ = on; }

 private:
  void Blocks(const uint8_t* p, size_t n);
  void Block(const uint8_t* p);

  static bool use_accel_;

  uint32_t h_[8];
  uint8_t buf_[64];
  size_t buf_len_ = 0;
  uint64_t total_ = 0;
};

std::string HexEncode(ByteSpan data);

}  // namespace fqpack

#endif  // FQPACK_SCHEMA_SHA256_H_
