#include "schema/sha256.h"

#include <openssl/evp.h>

#include <stdexcept>

namespace fqpack {
namespace {

// Fetched once: EVP_sha256() would look the algorithm up again on every
// EVP_DigestInit_ex. Never freed; it lives as long as the process.
const EVP_MD* Sha256Md() {
  static const EVP_MD* md = EVP_MD_fetch(nullptr, "SHA256", nullptr);
  return md;
}

// libcrypto fails here only when it cannot allocate or cannot load its
// default provider (a broken installation); the command reports it as an
// internal error.
void Check(int ok, const char* what) {
  if (ok != 1) throw std::runtime_error(std::string("libcrypto: SHA-256 ") + what + " failed");
}

}  // namespace

Sha256::Sha256() : ctx_(EVP_MD_CTX_new()) {
  if (ctx_ == nullptr) throw std::bad_alloc();
  const EVP_MD* md = Sha256Md();
  if (md == nullptr) {
    EVP_MD_CTX_free(ctx_);
    throw std::runtime_error("libcrypto: no SHA-256");
  }
  if (EVP_DigestInit_ex(ctx_, md, nullptr) != 1) {
    EVP_MD_CTX_free(ctx_);
    throw std::runtime_error("libcrypto: SHA-256 init failed");
  }
}

Sha256::~Sha256() { EVP_MD_CTX_free(ctx_); }

void Sha256::Update(ByteSpan data) {
  if (data.empty()) return;
  Check(EVP_DigestUpdate(ctx_, data.data(), data.size()), "update");
}

std::array<uint8_t, 32> Sha256::Finish() {
  std::array<uint8_t, 32> out;
  unsigned int n = 0;
  Check(EVP_DigestFinal_ex(ctx_, out.data(), &n), "final");
  Check(n == out.size(), "digest size");
  return out;
}

std::string HexEncode(ByteSpan data) {
  static const char kHex[] = "0123456789abcdef";
  std::string s;
  s.reserve(data.size() * 2);
  for (uint8_t b : data) {
    s.push_back(kHex[b >> 4]);
    s.push_back(kHex[b & 15]);
  }
  return s;
}

std::string Sha256::HexOf(ByteSpan data) {
  Sha256 h;
  h.Update(data);
  auto d = h.Finish();
  return HexEncode(d);
}

}  // namespace fqpack
