#include "cli/output.h"

#include <unistd.h>

#include <algorithm>
#include <cstdio>

namespace fqpack::cli {

int ExitCodeFor(const Status& s) {
  switch (s.code()) {
    case Status::Code::kOk:
      return kExitOk;
    case Status::Code::kInvalidArgument:
      return kExitUsage;
    case Status::Code::kCorruption:
      return kExitCorrupt;
    case Status::Code::kNotFound:
      return kExitNotFound;
    case Status::Code::kNotSupported:
      return kExitNotSupported;
    case Status::Code::kBusy:
      return kExitBusy;
    case Status::Code::kAborted:
      return kExitInterrupted;
    case Status::Code::kIOError:
      return kExitFailure;
  }
  return kExitFailure;
}

bool StderrIsTerminal() { return ::isatty(STDERR_FILENO) == 1; }

Progress::Progress(std::string task, uint64_t total, bool enabled)
    : task_(std::move(task)),
      total_(total),
      enabled_(enabled),
      tty_(StderrIsTerminal()),
      start_(std::chrono::steady_clock::now()),
      last_draw_(start_) {}

Progress::~Progress() {
  if (enabled_ && !finished_ && tty_) std::fputs("\n", stderr);
}

void Progress::Update(uint64_t done, std::string_view detail) {
  if (!enabled_ || finished_) return;
  std::lock_guard<std::mutex> lock(mu_);
  const double frac = total_ == 0 ? 1.0 : std::min(1.0, static_cast<double>(done) / total_);
  const auto now = std::chrono::steady_clock::now();
  if (tty_) {
    if (done < total_ && now - last_draw_ < std::chrono::milliseconds(100)) return;
    last_draw_ = now;
    const int width = 30;
    const int filled = static_cast<int>(frac * width);
    std::string bar(static_cast<size_t>(filled), '#');
    bar.resize(width, '.');
    std::string d(detail.substr(0, 40));
    std::fprintf(stderr, "\r%s [%s] %3d%% %llu/%llu %-40s", task_.c_str(), bar.c_str(),
                 static_cast<int>(frac * 100), static_cast<unsigned long long>(done),
                 static_cast<unsigned long long>(total_), d.c_str());
    std::fflush(stderr);
  } else {
    // Without a terminal, a line per tenth, and only for work that takes a
    // while: a log should not fill with progress of sub-second tasks.
    if (now - start_ < std::chrono::seconds(2)) return;
    const int tenth = static_cast<int>(frac * 10);
    if (tenth == last_tenth_) return;
    last_tenth_ = tenth;
    const double secs = std::chrono::duration<double>(now - start_).count();
    std::fprintf(stderr, "%s: %d%% (%llu/%llu) %.1fs\n", task_.c_str(), tenth * 10,
                 static_cast<unsigned long long>(done), static_cast<unsigned long long>(total_),
                 secs);
  }
}

void Progress::Finish(std::string_view summary) {
  if (!enabled_ || finished_) return;
  std::lock_guard<std::mutex> lock(mu_);
  finished_ = true;
  const double secs =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  if (tty_) std::fputs("\r\033[K", stderr);
  if (!tty_ && last_tenth_ < 0) return;  // nothing was shown: nothing to close
  std::fprintf(stderr, "%s: done in %s%s%s\n", task_.c_str(), FormatSeconds(secs).c_str(),
               summary.empty() ? "" : ", ", std::string(summary).c_str());
}

Table::Table(std::vector<std::string> headers, std::string right_aligned)
    : headers_(std::move(headers)), right_(std::move(right_aligned)) {
  right_.resize(headers_.size(), 'l');
}

void Table::AddRow(std::vector<std::string> cells) {
  cells.resize(headers_.size());
  rows_.push_back(std::move(cells));
}

std::string Table::Render(std::string_view indent) const {
  std::vector<size_t> width(headers_.size());
  for (size_t c = 0; c < headers_.size(); ++c) width[c] = headers_[c].size();
  for (const auto& r : rows_) {
    for (size_t c = 0; c < r.size(); ++c) width[c] = std::max(width[c], r[c].size());
  }
  std::string out;
  auto line = [&](const std::vector<std::string>& cells) {
    std::string l(indent);
    for (size_t c = 0; c < cells.size(); ++c) {
      const size_t pad = width[c] - cells[c].size();
      if (c > 0) l += "  ";
      if (right_[c] == 'r')
        l += std::string(pad, ' ') + cells[c];
      else
        l += cells[c] + (c + 1 < cells.size() ? std::string(pad, ' ') : "");
    }
    while (!l.empty() && l.back() == ' ') l.pop_back();
    out += l + "\n";
  };
  line(headers_);
  for (const auto& r : rows_) line(r);
  return out;
}

std::string FormatDouble(double v, int decimals) {
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%.*f", decimals, v);
  return buf;
}

std::string FormatRatio(double v) { return FormatDouble(v, 2) + "x"; }

std::string FormatSeconds(double s) {
  if (s < 1) return FormatDouble(s * 1000, 0) + " ms";
  if (s < 120) return FormatDouble(s, 2) + " s";
  return FormatDouble(s / 60, 1) + " min";
}

}  // namespace fqpack::cli
