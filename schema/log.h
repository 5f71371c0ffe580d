// Warnings from library code. The library never prints; it hands a line to
// the installed handler (cli/ installs one that writes to stderr). The default
// handler drops the line.
#ifndef FQPACK_SCHEMA_LOG_H_
#define FQPACK_SCHEMA_LOG_H_

#include <functional>
#include <string_view>

namespace fqpack {

using WarningHandler = std::function<void(std::string_view)>;

// Installs `handler` for all threads; returns the previous one.
WarningHandler SetWarningHandler(WarningHandler handler);
void Warn(std::string_view message);

}  // namespace fqpack

#endif  // FQPACK_SCHEMA_LOG_H_
