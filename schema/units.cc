#include "schema/units.h"

#include <cctype>
#include <cmath>
#include <cstdio>
#include <string>

namespace fqpack {

std::string FormatBytes(uint64_t bytes) {
  static const char* kUnits[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
  if (bytes < 1024) return std::to_string(bytes) + " B";
  double v = static_cast<double>(bytes);
  int u = 0;
  while (v >= 1024 && u < 5) {
    v /= 1024;
    ++u;
  }
  char buf[32];
  std::snprintf(buf, sizeof(buf), v < 10 ? "%.2f %s" : (v < 100 ? "%.1f %s" : "%.0f %s"), v,
                kUnits[u]);
  return buf;
}

std::string FormatBytesSigned(int64_t bytes) {
  if (bytes < 0) return "-" + FormatBytes(static_cast<uint64_t>(-(bytes + 1)) + 1);
  return FormatBytes(static_cast<uint64_t>(bytes));
}

Result<uint64_t> ParseBytes(std::string_view text) {
  std::string s;
  for (char c : text) {
    if (!std::isspace(static_cast<unsigned char>(c))) s += c;
  }
  size_t i = 0;
  while (i < s.size() && (std::isdigit(static_cast<unsigned char>(s[i])) || s[i] == '.')) ++i;
  std::string num = s.substr(0, i), unit = s.substr(i);
  auto bad = [&] {
    return Status::InvalidArgument("'" + std::string(text) +
                                   "' is not a size (examples: 300MB, 512KiB, 1.5G, 4096)");
  };
  if (num.empty() || num == "." || num.find('.') != num.rfind('.')) return bad();
  for (char& c : unit) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  double mult;
  if (unit.empty() || unit == "b")
    mult = 1;
  else if (unit == "kb")
    mult = 1e3;
  else if (unit == "mb")
    mult = 1e6;
  else if (unit == "gb")
    mult = 1e9;
  else if (unit == "tb")
    mult = 1e12;
  else if (unit == "k" || unit == "kib")
    mult = 1024.0;
  else if (unit == "m" || unit == "mib")
    mult = 1024.0 * 1024;
  else if (unit == "g" || unit == "gib")
    mult = 1024.0 * 1024 * 1024;
  else if (unit == "t" || unit == "tib")
    mult = 1024.0 * 1024 * 1024 * 1024;
  else
    return bad();
  // Below 2^64 a double rounds to a whole number that still fits a uint64
  // (llround would overflow its signed result from 2^63 on).
  double v = std::strtod(num.c_str(), nullptr) * mult;
  if (!std::isfinite(v) || v >= 18446744073709551616.0) return bad();
  return static_cast<uint64_t>(std::round(v));
}

}  // namespace fqpack
