// runtime::ParseBudgetTrace on arbitrary text (`fqpack run --budget-trace`),
// and ParseBytes, which reads its budgets and `--budget`, on each line. A
// parsed trace must keep what the header promises: at least one change,
// token indices >= 0 and in order, budgets > 0, line numbers rising. A size
// that parses must be the number written, times its unit.

#include <cctype>
#include <cmath>
#include <cstdlib>
#include <string>
#include <string_view>

#include "runtime/elastic.h"
#include "schema/units.h"
#include "tests/fuzz/fuzz_target.h"

namespace fqpack::fuzz {
namespace {

// The value ParseBytes should give for `text`, from strtod and the unit
// table in schema/units.h, or a negative number when it cannot tell.
double ExpectedBytes(std::string_view text) {
  std::string s;
  for (char c : text) {
    if (!std::isspace(static_cast<unsigned char>(c)))
      s += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  }
  size_t i = 0;
  while (i < s.size() && (std::isdigit(static_cast<unsigned char>(s[i])) || s[i] == '.')) ++i;
  const std::string unit = s.substr(i);
  const double k = 1024.0;
  double mult = -1;
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
    mult = k;
  else if (unit == "m" || unit == "mib")
    mult = k * k;
  else if (unit == "g" || unit == "gib")
    mult = k * k * k;
  else if (unit == "t" || unit == "tib")
    mult = k * k * k * k;
  if (mult < 0) return -1;
  return std::strtod(s.substr(0, i).c_str(), nullptr) * mult;
}

void CheckParseBytes(std::string_view text) {
  Result<uint64_t> v = ParseBytes(text);
  if (!v.ok()) {
    FQ_FUZZ_CHECK(v.status().IsInvalidArgument(), v.status().ToString());
    return;
  }
  const double want = ExpectedBytes(text);
  FQ_FUZZ_CHECK(want >= 0, "ParseBytes took '" + std::string(text) + "'");
  // Rounding to a whole byte, and the double's own precision.
  const double got = static_cast<double>(*v);
  FQ_FUZZ_CHECK(std::fabs(got - want) <= 0.5 + want * 1e-15,
                "ParseBytes('" + std::string(text) + "') = " + std::to_string(*v) +
                    ", expected about " + std::to_string(want));
}

}  // namespace
}  // namespace fqpack::fuzz

FQ_FUZZ_ENTRY(fuzz_budget_trace)(const uint8_t* data, size_t size) {
  using namespace fqpack;
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  Result<std::vector<runtime::BudgetChange>> trace = runtime::ParseBudgetTrace(text, "fuzz.csv");
  if (!trace.ok()) {
    FQ_FUZZ_CHECK(trace.status().IsInvalidArgument(), trace.status().ToString());
  } else {
    FQ_FUZZ_CHECK(!trace->empty(), "an empty trace parsed");
    for (size_t i = 0; i < trace->size(); ++i) {
      const runtime::BudgetChange& c = (*trace)[i];
      FQ_FUZZ_CHECK(c.token >= 0 && c.budget > 0 && c.line >= 1, "line " + std::to_string(c.line));
      if (i > 0) {
        FQ_FUZZ_CHECK(c.token >= (*trace)[i - 1].token && c.line > (*trace)[i - 1].line,
                      "line " + std::to_string(c.line) + " out of order");
      }
    }
  }
  // Each line as a size, the budget field of each line as well.
  std::string_view rest = text;
  for (int lines = 0; !rest.empty() && lines < 64; ++lines) {
    const size_t nl = rest.find('\n');
    const std::string_view line = rest.substr(0, nl);
    rest = nl == std::string_view::npos ? std::string_view() : rest.substr(nl + 1);
    fuzz::CheckParseBytes(line);
    if (const size_t comma = line.find(','); comma != std::string_view::npos) {
      fuzz::CheckParseBytes(line.substr(comma + 1));
    }
  }
  return 0;
}
