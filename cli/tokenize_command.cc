// fqpack tokenize: the tokens of a text as the model's tokenizer splits it.

#include <cstdio>

#include "cli/app.h"
#include "cli/model_resolution.h"
#include "runtime/tokenizer.h"
#include "schema/json.h"

namespace fqpack::cli {
namespace {

struct TokenizeArgs {
  ModelSourceArgs source;
  std::string text;
  bool no_special = false;
  bool parse_special = false;
};

Status RunTokenize(Context& ctx, const TokenizeArgs& args) {
  FQ_ASSIGN_OR_RETURN(ModelSource src, ResolveModelSource(ctx, args.source, false));
  FQ_ASSIGN_OR_RETURN(runtime::Tokenizer tok, TokenizerOf(src.manifest));
  const std::vector<int32_t> ids = tok.Encode(args.text, !args.no_special, args.parse_special);
  if (ctx.json) {
    JsonWriter w;
    w.BeginObject().Key("model").String(src.manifest.model);
    w.Key("n_tokens").Int(static_cast<int64_t>(ids.size()));
    w.Key("tokens").BeginArray();
    for (int32_t id : ids) w.Int(id);
    w.EndArray().Key("pieces").BeginArray();
    for (int32_t id : ids) w.String(tok.TokenToPiece(id, true));
    w.EndArray().EndObject();
    ctx.Print(w.str());
    return Status::OK();
  }
  std::string out;
  char line[32];
  for (int32_t id : ids) {
    std::snprintf(line, sizeof(line), "%6d -> '", id);
    out += line + tok.TokenToPiece(id, true) + "'\n";
  }
  ctx.Print(out.empty() ? "(no tokens)" : out);
  return Status::OK();
}

}  // namespace

void RegisterTokenizeCommand(CLI::App& app, Context& ctx) {
  auto tk = std::make_shared<TokenizeArgs>();
  CLI::App* t = app.add_subcommand("tokenize",
                                   "Show the tokens of a text as the model's tokenizer splits it");
  tk->source.AddOptions(t, false, false);
  t->add_option("--text", tk->text, "Text to tokenize")->required();
  t->add_flag("--no-bos", tk->no_special,
              "Do not add BOS/EOS even when the vocabulary asks for them");
  t->add_flag("--parse-special", tk->parse_special,
              "Turn control tokens written in the text (\"<s>\") into those tokens");
  t->callback([&ctx, tk] { ctx.action = [&ctx, tk] { return RunTokenize(ctx, *tk); }; });
}

}  // namespace fqpack::cli
