// The fqpack command line: global options, the subcommands, and the one
// place where a Status becomes a message on stderr and an exit code.
#ifndef FQPACK_CLI_APP_H_
#define FQPACK_CLI_APP_H_

#include <CLI/CLI.hpp>
#include <atomic>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "cli/output.h"
#include "schema/env.h"
#include "schema/status.h"
#include "store/store.h"

namespace fqpack::search {
struct SearchProgress;
}  // namespace fqpack::search

namespace fqpack::cli {

// State shared by all subcommands: global options and what to run.
struct Context {
  std::string store_flag;  // --store
  bool json = false;       // --json: one JSON document on stdout
  bool quiet = false;      // --quiet: no progress or notes on stderr
  int threads = 0;         // --threads: 0 = one per core
  Env* env = Env::Default();
  // Set by the chosen subcommand's parse callback; run after parsing.
  std::function<Status()> action;

  // --store, else $FQPACK_STORE, else ./.fqpack-store.
  std::string StoreDir() const;
  Result<std::unique_ptr<store::Store>> OpenStore() const;
  int Threads() const;
  bool ShowProgress() const { return !quiet && !json; }

  // A result line on stdout.
  void Print(std::string_view text) const;
  // A note on stderr (suppressed by --quiet).
  void Note(std::string_view text) const;
};

// Set once Ctrl-C was pressed; long tasks poll it and stop cleanly.
std::atomic<bool>& InterruptFlag();

// Registration of the subcommands (one function per cli/*_command(s).cc file).
void RegisterStoreCommands(CLI::App& app, Context& ctx);
void RegisterPplCommand(CLI::App& app, Context& ctx);
void RegisterRunCommand(CLI::App& app, Context& ctx);
void RegisterTokenizeCommand(CLI::App& app, Context& ctx);
void RegisterPackCommands(CLI::App& app, Context& ctx);
void RegisterGcCommands(CLI::App& app, Context& ctx);
void RegisterSearchCommands(CLI::App& app, Context& ctx);
void RegisterQuantizeCommands(CLI::App& app, Context& ctx);
void RegisterDynamicCommands(CLI::App& app, Context& ctx);
void RegisterServeCommand(CLI::App& app, Context& ctx);

// `fqpack export FILE.fqpack --eqm K | --qm LABEL -o OUT.gguf` (export_command.cc).
Status ExportPackGguf(Context& ctx, const std::string& pack, const std::string& ensemble, int eqm,
                      const std::string& qm, const std::string& out);

// Progress of a FlexQuant search (search and gc --prune's repair): one bar
// per phase, sensitivity then tree search, each labelled `prefix` + phase.
// Update is the SearchOptions::progress callback (search_commands.cc).
class SearchBars {
 public:
  SearchBars(const Context& ctx, std::string prefix) : ctx_(ctx), prefix_(std::move(prefix)) {}
  ~SearchBars() { Finish(); }
  void Update(const search::SearchProgress& p);
  void Finish();

 private:
  const Context& ctx_;
  std::string prefix_;
  int phase_ = -1;
  std::unique_ptr<Progress> bar_;
};

// Runs the command line; returns the process exit code.
int Main(int argc, char** argv);

}  // namespace fqpack::cli

#endif  // FQPACK_CLI_APP_H_
