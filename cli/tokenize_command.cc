// fqpack tokenize: the tokens of a text as the model's tokenizer splits it:
// a model of the store, a .fqpack, or any GGUF file (vocab-only ones too).

#include <cstdio>
#include <cstring>
#include <optional>

#include "cli/app.h"
#include "cli/model_resolution.h"
#include "pack/format.h"
#include "runtime/tokenizer.h"
#include "schema/gguf.h"
#include "schema/json.h"

namespace fqpack::cli {
namespace {

struct TokenizeArgs {
  ModelSourceArgs source;
  std::string text;
  bool no_special = false;
  bool parse_special = false;
};

bool StartsWith(const MappedFile& file, const void* magic, size_t n) {
  const ByteSpan bytes = file.bytes();
  return bytes.size() >= n && std::memcmp(bytes.data(), magic, n) == 0;
}

// The tokenizer of `path` when it is a GGUF file: its metadata is all that is
// read, so a vocab-only file (no tensors) works as well as a model.
Result<runtime::Tokenizer> GgufTokenizer(const std::string& path, const MappedFile& file,
                                         std::string* model) {
  FQ_ASSIGN_OR_RETURN(const gguf::Header header, gguf::ParseFile(file.bytes(), path));
  *model = path;
  if (header.metadata.Has("general.name")) {
    Result<std::string> name = header.metadata.GetString("general.name");
    if (name.ok()) *model = *name;
  }
  if (!header.metadata.Has("tokenizer.ggml.model")) {
    return Status::NotSupported(
        path + ": no tokenizer in this GGUF file (tokenizer.ggml.model is missing)");
  }
  return runtime::Tokenizer::FromMetadata(header.metadata, path);
}

Status RunTokenize(Context& ctx, const TokenizeArgs& args) {
  std::string model;
  std::optional<runtime::Tokenizer> loaded;
  if (!args.source.pack.empty()) {
    FQ_ASSIGN_OR_RETURN(MappedFile file, ctx.env->MapFile(args.source.pack));
    if (StartsWith(file, "GGUF", 4)) {
      FQ_ASSIGN_OR_RETURN(loaded, GgufTokenizer(args.source.pack, file, &model));
    } else if (!StartsWith(file, pack::kHeaderMagic, sizeof(pack::kHeaderMagic))) {
      return Status::Corruption(args.source.pack +
                                ": neither a GGUF file nor a .fqpack (no magic of either)");
    }
  }
  if (!loaded) {
    FQ_ASSIGN_OR_RETURN(ModelSource src, ResolveModelSource(ctx, args.source, false));
    FQ_ASSIGN_OR_RETURN(loaded, TokenizerOf(src.manifest));
    model = src.manifest.model;
  }
  const runtime::Tokenizer& tok = *loaded;
  const std::vector<int32_t> ids = tok.Encode(args.text, !args.no_special, args.parse_special);
  if (ctx.json) {
    JsonWriter w;
    w.BeginObject().Key("model").String(model);
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
  t->get_option("pack")->description(
      "A GGUF file (vocab-only ones too) or a .fqpack (default: a model of the store)");
  t->add_option("--text", tk->text, "Text to tokenize")->required();
  t->add_flag("--no-bos", tk->no_special,
              "Do not add BOS/EOS even when the vocabulary asks for them");
  t->add_flag("--parse-special", tk->parse_special,
              "Turn control tokens written in the text (\"<s>\") into those tokens");
  t->callback([&ctx, tk] { ctx.action = [&ctx, tk] { return RunTokenize(ctx, *tk); }; });
}

}  // namespace fqpack::cli
