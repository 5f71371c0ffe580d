// A structure-aware mutator for .fqpack files (schema/fqpack_format.md).
// Flipping any byte of a pack is caught by a checksum (header, footer or the
// index's XXH3), so random mutations never reach the reader's validation of
// the index rows. This mutator takes a pack apart at the offsets its footer
// gives, changes the index through SQLite (a column of a row, a row, the
// schema version, the schema itself) and/or the payload bytes, lays the
// file out again and writes a header and a footer whose checksums match.
//
// Deterministic: the same input and seed give the same output.
#ifndef FQPACK_TESTS_FUZZ_PACK_MUTATOR_H_
#define FQPACK_TESTS_FUZZ_PACK_MUTATOR_H_

#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <random>

#include "schema/coding.h"
#include "schema/status.h"
#include "tests/support/pack_util.h"

namespace fqpack::fuzz {

using fqpack::testing::JoinPack;
using fqpack::testing::PackParts;
using fqpack::testing::SplitPack;

// One to three random changes to an SQLite database image (see the .cc for
// the list). NotSupported when `image` is not a database SQLite can open.
Result<Bytes> MutateIndex(ByteSpan image, std::mt19937_64* rng);

// The same database (schema, rows, user_version) with pages of `page_size`
// bytes: smaller seed files. The reader does not care about the page size.
Result<Bytes> RepageIndex(ByteSpan image, int page_size);

// libFuzzer's mutator (LLVMFuzzerMutate) or a stand-in: mutates data[0,
// size) in place within max_size bytes and returns the new size.
using ByteMutator = std::function<size_t(uint8_t* data, size_t size, size_t max_size)>;

// The custom mutator: usually a structural change to a pack (index rows,
// payload bytes, the footer's payload end) with the checksums made right
// again; sometimes, and for anything that is not laid out as a pack, plain
// `mutate_bytes`. Returns the new size (at most max_size).
size_t MutatePack(uint8_t* data, size_t size, size_t max_size, unsigned int seed,
                  const ByteMutator& mutate_bytes);

}  // namespace fqpack::fuzz

#endif  // FQPACK_TESTS_FUZZ_PACK_MUTATOR_H_
