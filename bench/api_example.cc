// The smallest application of fqpack's public API (include/fqpack/fqpack.h):
// open a pack, generate while another thread lowers the budget to the
// minimum and raises it again, then print what happened.
//
//   api_example model.fqpack ["prompt"] [tokens]
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>

#include "fqpack/fqpack.h"

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s model.fqpack [prompt] [tokens]\n", argv[0]);
    return 2;
  }
  auto model = fqpack::ElasticModel::Open(argv[1]);
  if (!model.ok()) {
    std::fprintf(stderr, "%s\n", model.status().message().c_str());
    return 1;
  }
  const fqpack::ElasticStats start = (*model)->Stats();
  std::printf("%s: %d EQMs, budgets from %llu to %llu bytes\n", argv[1], start.levels,
              static_cast<unsigned long long>(start.minimum_budget),
              static_cast<unsigned long long>(start.largest_budget));

  // Memory pressure arrives from elsewhere: another thread changes the budget.
  std::thread pressure([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
    (void)(*model)->SetBudget((*model)->MinimumBudget());
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
    (void)(*model)->SetBudget(start.largest_budget);
  });
  fqpack::GenerateRequest request;
  request.prompt = argc > 2 ? argv[2] : "Once upon a time";
  request.max_tokens = argc > 3 ? std::atoi(argv[3]) : 100;
  auto text = (*model)->Generate(request, [](std::string_view piece) {
    std::fwrite(piece.data(), 1, piece.size(), stdout);
    std::fflush(stdout);
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
    return true;
  });
  pressure.join();
  std::printf("\n");
  if (!text.ok()) {
    std::fprintf(stderr, "%s\n", text.status().message().c_str());
    return 1;
  }
  for (const fqpack::TransitionInfo& t : (*model)->Transitions()) {
    std::printf("token %lld: %s -> %s, %d modules, %llu bytes read, %.2f ms\n",
                static_cast<long long>(t.token), t.from.c_str(), t.to.c_str(), t.modules_swapped,
                static_cast<unsigned long long>(t.bytes_read), t.milliseconds);
  }
  const fqpack::ElasticStats s = (*model)->Stats();
  std::printf("now %s: %llu bytes of weights + %llu of KV cache and scratch; %lld transitions\n",
              s.eqm.c_str(), static_cast<unsigned long long>(s.weight_bytes),
              static_cast<unsigned long long>(s.overhead_bytes),
              static_cast<long long>(s.transitions));
  return 0;
}
