#include "runtime/unicode.h"

#include <algorithm>
#include <array>

namespace fqpack::runtime {

namespace {

constexpr uint32_t kMaxCodepoint = 0x10FFFF;
// Code points below this are looked up in a flat table built once from the
// runs; the rest by binary search over the runs.
constexpr uint32_t kFlatLimit = 0x3000;

CodepointClass SearchRuns(uint32_t cp) {
  const uint32_t* begin = unicode_data::kClassRuns;
  const uint32_t* end = begin + unicode_data::kNumClassRuns;
  // The first run that starts after cp, then step back to the one holding it.
  const uint32_t* it = std::upper_bound(begin, end, (cp << 3) | 7u);
  return static_cast<CodepointClass>(*(it - 1) & 7u);
}

struct FlatTable {
  std::array<CodepointClass, kFlatLimit> classes;
  FlatTable() {
    for (uint32_t cp = 0; cp < kFlatLimit; ++cp) classes[cp] = SearchRuns(cp);
  }
};

struct ByteMaps {
  std::array<std::string, 256> to_unicode;
  std::array<int16_t, 512> from_unicode;  // every mapped code point is < 0x144
  ByteMaps() {
    from_unicode.fill(-1);
    int next = 256;
    for (int b = 0; b < 256; ++b) {
      const bool self = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
      const uint32_t cp = self ? static_cast<uint32_t>(b) : static_cast<uint32_t>(next++);
      AppendUtf8(cp, &to_unicode[b]);
      from_unicode[cp] = static_cast<int16_t>(b);
    }
  }
};

const ByteMaps& Maps() {
  static const ByteMaps maps;
  return maps;
}

}  // namespace

CodepointClass ClassOf(uint32_t cp) {
  static const FlatTable flat;
  if (cp < kFlatLimit) return flat.classes[cp];
  if (cp > kMaxCodepoint) return CodepointClass::kUndefined;
  return SearchRuns(cp);
}

bool IsWhitespace(uint32_t cp) {
  if (cp < 0x80) return cp == ' ' || (cp >= '\t' && cp <= '\r');
  return std::binary_search(unicode_data::kWhiteSpace,
                            unicode_data::kWhiteSpace + unicode_data::kNumWhiteSpace, cp);
}

std::vector<uint32_t> DecodeUtf8(std::string_view text) {
  std::vector<uint32_t> out;
  out.reserve(text.size());
  const size_t n = text.size();
  auto cont = [&](size_t i) {
    return i < n && (static_cast<unsigned char>(text[i]) & 0xC0) == 0x80;
  };
  auto bits = [&](size_t i, unsigned mask) {
    return static_cast<uint32_t>(static_cast<unsigned char>(text[i]) & mask);
  };
  for (size_t i = 0; i < n;) {
    const unsigned char lead = static_cast<unsigned char>(text[i]);
    if (lead < 0x80) {
      out.push_back(lead);
      i += 1;
    } else if ((lead & 0xE0) == 0xC0 && cont(i + 1)) {
      out.push_back(bits(i, 0x1F) << 6 | bits(i + 1, 0x3F));
      i += 2;
    } else if ((lead & 0xF0) == 0xE0 && cont(i + 1) && cont(i + 2)) {
      out.push_back(bits(i, 0x0F) << 12 | bits(i + 1, 0x3F) << 6 | bits(i + 2, 0x3F));
      i += 3;
    } else if ((lead & 0xF8) == 0xF0 && cont(i + 1) && cont(i + 2) && cont(i + 3)) {
      out.push_back(bits(i, 0x07) << 18 | bits(i + 1, 0x3F) << 12 | bits(i + 2, 0x3F) << 6 |
                    bits(i + 3, 0x3F));
      i += 4;
    } else {
      out.push_back(kReplacementChar);
      i += 1;
    }
  }
  return out;
}

void AppendUtf8(uint32_t cp, std::string* out) {
  if (cp < 0x80) {
    out->push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out->push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out->push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out->push_back(static_cast<char>(0xF0 | ((cp >> 18) & 0x07)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

const std::string& ByteToUnicode(uint8_t byte) { return Maps().to_unicode[byte]; }

int UnicodeToByte(uint32_t cp) { return cp < 512 ? Maps().from_unicode[cp] : -1; }

}  // namespace fqpack::runtime
