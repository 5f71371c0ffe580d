// What `fqpack ppl` and `fqpack run` report about a run besides its
// result: the transitions of an elastic run (stderr notes, --transitions-json,
// --json) and the per-token precision of a --dynamic one.
#ifndef FQPACK_CLI_RUN_REPORT_H_
#define FQPACK_CLI_RUN_REPORT_H_

#include <string>
#include <vector>

#include "cli/app.h"
#include "cli/model_resolution.h"
#include "runtime/elastic.h"
#include "schema/json.h"

namespace fqpack::cli {

// Elastic runs log each transition on stderr as it happens.
runtime::TransitionCallback LogTransitions(Context& ctx);
// --transitions-json: every transition to `path` (nothing when empty).
Status WriteTransitionsFile(Context& ctx, const std::string& path,
                            const std::vector<runtime::TransitionRecord>& transitions);
// The residency state after a run, for --json.
void WriteResidencyJson(JsonWriter* w, runtime::ElasticRuntime* rt,
                        const std::vector<runtime::TransitionRecord>& transitions);
// "eqm:17 (2.10 MiB of weights + 300 KiB KV cache and scratch); 12 transitions: ..."
std::string ResidencySummary(runtime::ElasticRuntime* rt);

// The "dynamic" object of --json.
void WriteDynamicJson(JsonWriter* w, const DynamicRun& d, double tokens_per_second);
// Notes on stderr: what was resident, the bits read, the hi units per token.
void NoteDynamic(Context& ctx, const DynamicRun& d, double tokens_per_second);

}  // namespace fqpack::cli

#endif  // FQPACK_CLI_RUN_REPORT_H_
