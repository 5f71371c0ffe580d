// SHA-256 (FIPS 180-4), used to fingerprint source checkpoints so that the
// store can tell a re-import of the same file from a different file.
//
// libcrypto (OpenSSL 3) computes it: on CPUs with the SHA extensions its
// assembly is as fast as fqpack's former hand-written SHA-NI code (1.63 GB/s
// both, bench/sha256_bench.cc; README "SHA-256"), and without them it is
// faster than portable C.
//
// Thread-safety: one Sha256 per thread; HexOf is reentrant.
#ifndef FQPACK_SCHEMA_SHA256_H_
#define FQPACK_SCHEMA_SHA256_H_

#include <array>
#include <cstdint>
#include <string>

#include "schema/coding.h"

struct evp_md_ctx_st;  // OpenSSL's EVP_MD_CTX

namespace fqpack {

class Sha256 {
 public:
  Sha256();
  ~Sha256();
  Sha256(const Sha256&) = delete;
  Sha256& operator=(const Sha256&) = delete;

  void Update(ByteSpan data);
  // The digest of everything passed to Update. Call once.
  std::array<uint8_t, 32> Finish();
  // Lower-case hex of the digest of `data`.
  static std::string HexOf(ByteSpan data);

 private:
  evp_md_ctx_st* ctx_;
};

std::string HexEncode(ByteSpan data);

}  // namespace fqpack

#endif  // FQPACK_SCHEMA_SHA256_H_
