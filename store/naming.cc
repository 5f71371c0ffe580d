#include "store/naming.h"

#include <array>
#include <cctype>
#include <charconv>
#include <cstdlib>
#include <utility>

#include "schema/env.h"
#include "schema/quant_types.h"
#include "store/module_source.h"

namespace fqpack::store {
namespace {

// llama.cpp's llama_ftype values (general.file_type) and their names.
constexpr std::array<std::pair<uint64_t, const char*>, 33> kFileTypes = {{
    {0, "F32"},      {1, "F16"},      {2, "Q4_0"},       {3, "Q4_1"},    {7, "Q8_0"},
    {8, "Q5_0"},     {9, "Q5_1"},     {10, "Q2_K"},      {11, "Q3_K_S"}, {12, "Q3_K_M"},
    {13, "Q3_K_L"},  {14, "Q4_K_S"},  {15, "Q4_K_M"},    {16, "Q5_K_S"}, {17, "Q5_K_M"},
    {18, "Q6_K"},    {19, "IQ2_XXS"}, {20, "IQ2_XS"},    {21, "Q2_K_S"}, {22, "IQ3_XS"},
    {23, "IQ3_XXS"}, {24, "IQ1_S"},   {25, "IQ4_NL"},    {26, "IQ3_S"},  {27, "IQ3_M"},
    {28, "IQ2_S"},   {29, "IQ2_M"},   {30, "IQ4_XS"},    {31, "IQ1_M"},  {32, "BF16"},
    {36, "TQ1_0"},   {37, "TQ2_0"},   {38, "MXFP4_MOE"},
}};

std::string Upper(std::string s) {
  for (char& c : s) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return s;
}

// The canonical spelling of a label name, or "" when it is not one.
std::string CanonicalLabel(const std::string& s) {
  const std::string up = Upper(s);
  for (const auto& [id, name] : kFileTypes) {
    if (up == name) return name;
  }
  if (const QTypeInfo* t = FindGgmlTypeByName(s)) return t->name;
  return "";
}

}  // namespace

std::optional<std::string> FileTypeName(uint64_t file_type) {
  for (const auto& [id, name] : kFileTypes) {
    if (id == file_type) return std::string(name);
  }
  return std::nullopt;
}

NameGuess GuessNamesFromFile(const std::string& path) {
  std::string stem = BaseName(path);
  if (stem.size() > 5 && Upper(stem.substr(stem.size() - 5)) == ".GGUF") {
    stem = stem.substr(0, stem.size() - 5);
  }
  // Try every separator position from the left so that the longest label
  // wins ("x-Q4_K_M" gives Q4_K_M, not M).
  for (size_t i = 0; i < stem.size(); ++i) {
    char c = stem[i];
    if (c != '-' && c != '.' && c != '_') continue;
    std::string label = CanonicalLabel(stem.substr(i + 1));
    if (!label.empty() && i > 0) return {stem.substr(0, i), label};
  }
  return {stem, ""};
}

std::string SlotKindOf(const std::string& name, int* layer) {
  *layer = -1;
  if (name == "token_embd.weight") return "embed";
  if (name == "output.weight") return "output";
  std::string rest = name;
  if (name.rfind("blk.", 0) == 0) {
    size_t dot = name.find('.', 4);
    if (dot != std::string::npos) {
      std::string num = name.substr(4, dot - 4);
      bool digits = !num.empty() && num.size() < 6;
      for (char c : num) digits = digits && std::isdigit(static_cast<unsigned char>(c));
      if (digits) std::from_chars(num.data(), num.data() + num.size(), *layer);
      rest = name.substr(dot + 1);
    }
  }
  // attn_qkv: phi3's fused Q/K/V projection.
  static const char* kKinds[] = {"attn_q",   "attn_k",   "attn_v", "attn_output",
                                 "attn_qkv", "ffn_gate", "ffn_up", "ffn_down"};
  for (const char* k : kKinds) {
    if (rest == std::string(k) + ".weight") return k;
  }
  if (rest.find("norm") != std::string::npos) return "norm";
  return "other";
}

}  // namespace fqpack::store
