// Unicode as the byte-level BPE tokenizers see it: code points decoded from
// UTF-8 the way llama.cpp's src/unicode.cpp decodes them, their general
// category collapsed to the classes a pre-tokenizer asks about (\p{L},
// \p{N}, ...), the White_Space property, and GPT-2's byte-to-character map.
//
// The category data is a committed table (runtime/unicode_data.cc) made by
// runtime/gen_unicode_data.py from the Unicode Character Database. All
// functions are pure and thread-safe.
#ifndef FQPACK_RUNTIME_UNICODE_H_
#define FQPACK_RUNTIME_UNICODE_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace fqpack::runtime {

// The major class of a code point's general category. kUndefined: not
// assigned (Cn), or beyond U+10FFFF.
enum class CodepointClass : uint8_t {
  kUndefined = 0,
  kLetter = 1,       // L: Lu Ll Lt Lm Lo
  kNumber = 2,       // N: Nd Nl No
  kPunctuation = 3,  // P
  kMark = 4,         // M
  kSymbol = 5,       // S
  kSeparator = 6,    // Z
  kOther = 7,        // C other than Cn: Cc Cf Cs Co
};

constexpr uint32_t kReplacementChar = 0xFFFD;

CodepointClass ClassOf(uint32_t cp);
// The White_Space property (Python's and Rust's regex \s).
bool IsWhitespace(uint32_t cp);

// The code points of `text`. As llama.cpp's unicode_cpts_from_utf8: a lead
// byte announces the length, continuation bytes are checked, overlong forms
// and surrogates are accepted, and a byte that starts no valid sequence
// becomes U+FFFD and is skipped alone.
std::vector<uint32_t> DecodeUtf8(std::string_view text);
// Appends the UTF-8 of `cp` (four bytes at most; code points past U+10FFFF
// as the 4-byte pattern allows, as llama.cpp encodes them).
void AppendUtf8(uint32_t cp, std::string* out);

// GPT-2's bytes_to_unicode: the printable character standing for each byte
// in a byte-level BPE vocabulary ('!'..'~', '¡'..'¬', '®'..'ÿ' stand for
// themselves, the other 68 bytes for U+0100 onwards in byte order), as UTF-8.
const std::string& ByteToUnicode(uint8_t byte);
// The inverse on code points: the byte `cp` stands for, or -1.
int UnicodeToByte(uint32_t cp);

namespace unicode_data {
extern const uint32_t kClassRuns[];
extern const size_t kNumClassRuns;
extern const uint32_t kWhiteSpace[];
extern const size_t kNumWhiteSpace;
}  // namespace unicode_data

}  // namespace fqpack::runtime

#endif  // FQPACK_RUNTIME_UNICODE_H_
