// The entry point of a fuzz target, built two ways (tests/fuzz/CMakeLists.txt):
//  - as a libFuzzer program (clang, FQPACK_FUZZ=ON): the entry is
//    LLVMFuzzerTestOneInput and libFuzzer's main drives it;
//  - into fuzz_replay_tests (any compiler, FQ_FUZZ_REPLAY defined), one
//    GoogleTest program holding every target, which replays the committed
//    corpus and regression inputs so that a fixed crash stays fixed in the
//    plain Release build. There each entry gets its target's own name and
//    registers itself under it.
//
//   FQ_FUZZ_ENTRY(fuzz_gguf)(const uint8_t* data, size_t size) { ... return 0; }
//
// An entry returns 0 for every input. Bad bytes must give an error value
// from the library; anything else a target finds wrong (a broken invariant,
// an error of a kind the API does not promise) goes through FQ_FUZZ_CHECK,
// which aborts, so that libFuzzer saves the input like any other crash.
#ifndef FQPACK_TESTS_FUZZ_FUZZ_TARGET_H_
#define FQPACK_TESTS_FUZZ_FUZZ_TARGET_H_

#include <cstddef>
#include <cstdint>
#include <string>

namespace fqpack::fuzz {

using FuzzEntry = int (*)(const uint8_t* data, size_t size);

// Defined by fuzz_replay_tests only; returns true so that it can run as a
// static initializer.
bool RegisterTarget(const char* name, FuzzEntry entry);

// Prints "fuzz check failed: <what>" and aborts.
[[noreturn]] void Fail(const std::string& what);

}  // namespace fqpack::fuzz

#define FQ_FUZZ_CHECK(cond, what)                                                     \
  do {                                                                                \
    if (!(cond)) ::fqpack::fuzz::Fail(std::string(#cond) + ": " + std::string(what)); \
  } while (0)

#ifdef FQ_FUZZ_REPLAY
#define FQ_FUZZ_ENTRY(name)                                  \
  static int name##_Entry(const uint8_t* data, size_t size); \
  [[maybe_unused]] static const bool name##_registered =     \
      ::fqpack::fuzz::RegisterTarget(#name, name##_Entry);   \
  static int name##_Entry
#else
#define FQ_FUZZ_ENTRY(name) extern "C" int LLVMFuzzerTestOneInput
#endif

#endif  // FQPACK_TESTS_FUZZ_FUZZ_TARGET_H_
