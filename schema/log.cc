#include "schema/log.h"

#include <mutex>
#include <string>

namespace fqpack {
namespace {
std::mutex& HandlerMutex() {
  static std::mutex mu;
  return mu;
}
WarningHandler& Handler() {
  static WarningHandler handler;
  return handler;
}
}  // namespace

WarningHandler SetWarningHandler(WarningHandler handler) {
  std::lock_guard<std::mutex> lock(HandlerMutex());
  WarningHandler old = std::move(Handler());
  Handler() = std::move(handler);
  return old;
}

void Warn(std::string_view message) {
  std::lock_guard<std::mutex> lock(HandlerMutex());
  if (Handler()) Handler()(message);
}

}  // namespace fqpack
