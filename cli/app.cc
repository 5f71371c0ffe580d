#include "cli/app.h"

#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <thread>

#include "cli/output.h"
#include "runtime/quant/quant.h"
#include "schema/log.h"

namespace fqpack::cli {

std::atomic<bool>& InterruptFlag() {
  static std::atomic<bool> flag{false};
  return flag;
}

namespace {
void OnInterrupt(int) {
  if (InterruptFlag().exchange(true)) std::_Exit(kExitInterrupted);  // second Ctrl-C: leave now
}
}  // namespace

std::string Context::StoreDir() const {
  if (!store_flag.empty()) return store_flag;
  if (const char* env_dir = std::getenv("FQPACK_STORE"); env_dir != nullptr && *env_dir != 0) {
    return env_dir;
  }
  return ".fqpack-store";
}

Result<std::unique_ptr<store::Store>> Context::OpenStore() const {
  return store::Store::Open(env, StoreDir());
}

int Context::Threads() const {
  if (threads > 0) return threads;
  return std::max(1u, std::thread::hardware_concurrency());
}

void Context::Print(std::string_view text) const {
  std::fwrite(text.data(), 1, text.size(), stdout);
  if (text.empty() || text.back() != '\n') std::fputc('\n', stdout);
}

void Context::Note(std::string_view text) const {
  if (quiet) return;
  std::fwrite(text.data(), 1, text.size(), stderr);
  if (text.empty() || text.back() != '\n') std::fputc('\n', stderr);
}

int Main(int argc, char** argv) {
  CLI::App app{
      "fqpack: elastic quantized LLMs. Stores the modules of several quantized checkpoints of one\n"
      "model once, builds FlexQuant ensembles of elastic models, and runs them under a memory "
      "budget."};
  app.name("fqpack");
  app.require_subcommand(1);
  app.fallthrough();
  app.set_version_flag("--version", "fqpack 0.1.0");
  Context ctx;
  app.add_option("--store", ctx.store_flag,
                 "Store directory (default: $FQPACK_STORE or ./.fqpack-store)")
      ->type_name("DIR");
  app.add_flag("--json", ctx.json, "Print one JSON document on stdout instead of tables");
  app.add_flag("-q,--quiet", ctx.quiet, "No progress or notes on stderr");
  app.add_option("-t,--threads", ctx.threads, "Worker threads (default: one per core)")
      ->check(CLI::Range(1, 1024));

  RegisterStoreCommands(app, ctx);
  RegisterPplCommand(app, ctx);
  RegisterRunCommand(app, ctx);
  RegisterTokenizeCommand(app, ctx);
  RegisterPackCommands(app, ctx);
  RegisterGcCommands(app, ctx);
  RegisterSearchCommands(app, ctx);
  RegisterQuantizeCommands(app, ctx);
  RegisterDynamicCommands(app, ctx);
  RegisterServeCommand(app, ctx);

  SetWarningHandler([&ctx](std::string_view msg) { ctx.Note("warning: " + std::string(msg)); });
  // FQPACK_KERNELS=portable|avx2|avx512 caps the kernel tier (the default,
  // avx512-gfni, is the widest the CPU runs): to compare tiers' speed and
  // results on one machine.
  if (const char* tier = std::getenv("FQPACK_KERNELS"); tier != nullptr && *tier != 0) {
    const std::string_view t(tier);
    if (t == "portable") {
      runtime::quant::SetSimdCap(runtime::quant::SimdLevel::kPortable);
    } else if (t == "avx2") {
      runtime::quant::SetSimdCap(runtime::quant::SimdLevel::kAvx2);
    } else if (t == "avx512") {
      runtime::quant::SetSimdCap(runtime::quant::SimdLevel::kAvx512);
    } else if (t != "avx512-gfni") {
      ctx.Note("warning: FQPACK_KERNELS=" + std::string(t) +
               " is not one of portable, avx2, avx512, avx512-gfni; using the widest tier");
    }
  }
  std::signal(SIGINT, OnInterrupt);
  std::signal(SIGPIPE, SIG_IGN);

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    int rc = app.exit(e);
    return rc == 0 ? kExitOk : kExitUsage;
  }
  if (!ctx.action) return kExitUsage;
  Status s;
  try {
    s = ctx.action();
  } catch (const std::bad_alloc&) {
    s = Status::IOError("out of memory");
  } catch (const std::exception& e) {
    s = Status::IOError(std::string("internal error: ") + e.what());
  }
  std::fflush(stdout);
  if (!s.ok()) {
    std::fprintf(stderr, "fqpack: error: %s\n", s.message().c_str());
    return ExitCodeFor(s);
  }
  return kExitOk;
}

}  // namespace fqpack::cli
