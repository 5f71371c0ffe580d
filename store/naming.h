// Names fqpack derives for what it imports: a model name and a QM label
// from a checkpoint's file name ("stories260K-Q4_K_M.gguf" -> model
// "stories260K", label "Q4_K_M") or, failing that, from its metadata.
#ifndef FQPACK_STORE_NAMING_H_
#define FQPACK_STORE_NAMING_H_

#include <cstdint>
#include <optional>
#include <string>

namespace fqpack::store {

// llama.cpp's name for a general.file_type value ("Q4_K_M"), or nullopt.
std::optional<std::string> FileTypeName(uint64_t file_type);

struct NameGuess {
  std::string model;  // empty when the file name carries no label
  std::string label;  // canonical spelling, e.g. "Q4_K_M"
};

// Splits "<model>[-._]<label>.gguf" where <label> is a known file-type or
// tensor-type name (case-insensitive). Without a known label, model is the
// stem and label is empty.
NameGuess GuessNamesFromFile(const std::string& path);

}  // namespace fqpack::store

#endif  // FQPACK_STORE_NAMING_H_
