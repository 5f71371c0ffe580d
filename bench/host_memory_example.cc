// A host app that tells fqpack how much memory its platform leaves, as an
// Android, iOS or macOS app does (include/fqpack/fqpack.h, "The budget from
// the device"): the model follows host reports, a "platform" thread plays the
// callbacks such an app receives while the model generates, and the app
// prints where each one left it.
//
//   host_memory_example model.fqpack ["prompt"]
//
// On a device the calls sit in the platform's callbacks instead:
//   Android: void onTrimMemory(int level) { model->ReportAndroidTrimLevel(level); }
//   iOS:     model->ReportAvailableBytes(os_proc_available_memory());  // on a timer or a warning
//   macOS:   dispatch_source_create(DISPATCH_SOURCE_TYPE_MEMORYPRESSURE, 0,
//              DISPATCH_MEMORYPRESSURE_NORMAL | DISPATCH_MEMORYPRESSURE_WARN |
//              DISPATCH_MEMORYPRESSURE_CRITICAL, queue), with a handler that maps
//              dispatch_source_get_data() to ReportPressure(kNormal / kModerate / kCritical).
#include <chrono>
#include <cstdio>
#include <string>
#include <thread>

#include "fqpack/fqpack.h"

namespace {

const char* Name(fqpack::MemoryPressure p) {
  switch (p) {
    case fqpack::MemoryPressure::kNormal:
      return "normal";
    case fqpack::MemoryPressure::kModerate:
      return "moderate";
    case fqpack::MemoryPressure::kCritical:
      return "critical";
  }
  return "?";
}

void Show(const fqpack::ElasticModel& model, const char* event) {
  const fqpack::MemoryStatus m = model.Memory();
  const fqpack::ElasticStats s = model.Stats();
  std::printf("%-44s available %10llu  pressure %-8s -> %s (%llu bytes of weights)\n", event,
              static_cast<unsigned long long>(m.available), Name(m.pressure), s.eqm.c_str(),
              static_cast<unsigned long long>(s.weight_bytes));
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s model.fqpack [prompt]\n", argv[0]);
    return 2;
  }
  auto opened = fqpack::ElasticModel::Open(argv[1]);
  if (!opened.ok()) {
    std::fprintf(stderr, "%s\n", opened.status().message().c_str());
    return 1;
  }
  fqpack::ElasticModel& model = **opened;
  const fqpack::ElasticStats start = model.Stats();
  // The host keeps no reserve of its own here: its figures are already what
  // the app may use.
  fqpack::Status s = model.FollowHostReports(/*reserve=*/1);
  if (!s.ok()) {
    std::fprintf(stderr, "%s\n", s.message().c_str());
    return 1;
  }
  Show(model, "start");
  // The platform's callbacks, in the order a busy phone might send them.
  std::thread platform([&] {
    auto pause = [] { std::this_thread::sleep_for(std::chrono::milliseconds(20)); };
    // Each report takes effect before the next token; look a moment later.
    model.ReportAvailableBytes(start.largest_budget * 2);
    pause();
    Show(model, "iOS: os_proc_available_memory() = plenty");
    model.ReportAvailableBytes((start.largest_budget + start.minimum_budget) / 2);
    pause();
    Show(model, "iOS: os_proc_available_memory() = half");
    model.ReportAndroidTrimLevel(15);  // TRIM_MEMORY_RUNNING_CRITICAL
    pause();
    Show(model, "Android: onTrimMemory(RUNNING_CRITICAL)");
    model.ReportPressure(fqpack::MemoryPressure::kNormal);  // DISPATCH_MEMORYPRESSURE_NORMAL
    model.ReportAvailableBytes(start.largest_budget * 2);
    pause();
    Show(model, "macOS: pressure normal, plenty again");
  });
  fqpack::GenerateRequest request;
  request.prompt = argc > 2 ? argv[2] : "Once upon a time";
  request.max_tokens = 200;
  request.temperature = 0;
  auto text = model.Generate(request, [](std::string_view) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
    return true;
  });
  platform.join();
  if (!text.ok()) {
    std::fprintf(stderr, "%s\n", text.status().message().c_str());
    return 1;
  }
  // Going up waits for the signal to last (two seconds) before it swaps;
  // an idle model swaps without being asked.
  std::this_thread::sleep_for(std::chrono::milliseconds(2500));
  Show(model, "two and a half seconds later");
  for (const fqpack::TransitionInfo& t : model.Transitions()) {
    std::printf("transition: %s -> %s, %d modules, %.2f ms\n", t.from.c_str(), t.to.c_str(),
                t.modules_swapped, t.milliseconds);
  }
  return 0;
}
