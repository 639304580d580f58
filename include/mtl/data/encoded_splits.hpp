// Turns raw row sources into datasets: vocabularies are fitted on the
// training split (two streaming passes, so a 10 GB file never sits in memory
// as raw ids), then every split is encoded with them. A missing validation
// or test source is a share of the training rows, chosen by a hash of the
// row's position: the same rows on every run, spread over the whole file.
#pragma once

#include <mtl/data/csv_reader.hpp>
#include <mtl/data/dataset.hpp>
#include <mtl/data/parsed_row.hpp>
#include <mtl/data/vocabulary.hpp>
#include <mtl/detail/hash_mix.hpp>
#include <mtl/features.hpp>

#include <c10/util/Exception.h>

#include <map>
#include <string>
#include <vector>

namespace mtl::data {

/// Field names of a source, in the order its rows carry them.
struct FieldNames {
  std::vector<std::string> sparse, dense;
};

struct SplitSources {
  RowSource train;
  RowSource valid;  ///< may be empty: then `valid_fraction` of the training rows are held out
  RowSource test;   ///< may be empty: then `test_fraction` of the training rows are held out
};

struct EncodeOptions {
  /// Ids seen fewer times than this in the training split share row 0.
  int64_t min_count = 1;
  int64_t embedding_dim = 8;
  /// Share of the training rows held out for validation when there is no valid source.
  double valid_fraction = 0.1;
  /// Share of the training rows held out for testing when there is no test source.
  double test_fraction = 0.1;
};

/// Which split a training-source row falls in when shares are held out.
enum class HeldOutRole { train, valid, test };

/// The role of the training source's row `position` (0-based): a 64-bit mix
/// of the position, read as a number in [0, 1), against the shares.
inline HeldOutRole held_out_role(int64_t position, double valid_share, double test_share) {
  const double u = mtl::detail::unit_interval(mtl::detail::mix64(static_cast<uint64_t>(position)));
  if (u < valid_share) return HeldOutRole::valid;
  if (u < valid_share + test_share) return HeldOutRole::test;
  return HeldOutRole::train;
}

struct EncodedSplits {
  FeatureSchema schema;
  std::vector<Vocabulary> vocabularies;  ///< one per sparse field
  Dataset train, valid, test;
  /// What reading each file found and changed, by file: a line without a header, conversions without a click
  /// dropped or counted as clicks. Empty for sources that are not CSV files.
  std::map<std::string, CsvReadReport> reads;
};

/// Appends one parsed row to `out`, encoded with `vocabularies`.
inline void encode_row(const ParsedRow& row, const std::vector<Vocabulary>& vocabularies, Dataset& out) {
  TORCH_CHECK(row.sparse.size() == vocabularies.size(), "encode_row expects ", vocabularies.size(),
              " sparse fields per row, but a row holds ", row.sparse.size());
  for (size_t j = 0; j < row.sparse.size(); ++j)
    out.ids.push_back(static_cast<int32_t>(vocabularies[j].encode(row.sparse[j])));
  out.dense.insert(out.dense.end(), row.dense.begin(), row.dense.end());
  out.click.push_back(row.click);
  out.conversion.push_back(row.conversion);
}

/// Encodes every row of `source` into `out` with `vocabularies`.
inline void encode_into(const RowSource& source, const std::vector<Vocabulary>& vocabularies, Dataset& out) {
  source([&](const ParsedRow& row) { encode_row(row, vocabularies, out); });
}

inline EncodedSplits encode_splits(const SplitSources& sources, const FieldNames& names,
                                   const EncodeOptions& options = {}) {
  TORCH_CHECK(sources.train, "encode_splits expects a training source");
  TORCH_CHECK(options.min_count >= 1, "encode_splits expects min_count >= 1, but got ", options.min_count);
  const double valid_share = sources.valid ? 0.0 : options.valid_fraction;
  const double test_share = sources.test ? 0.0 : options.test_fraction;
  TORCH_CHECK(sources.valid || (valid_share > 0 && valid_share < 1),
              "encode_splits expects valid_fraction in (0, 1), but got ", options.valid_fraction);
  TORCH_CHECK(sources.test || (test_share > 0 && test_share < 1),
              "encode_splits expects test_fraction in (0, 1), but got ", options.test_fraction);
  TORCH_CHECK(valid_share + test_share < 1, "encode_splits expects the held-out shares to leave training rows, but ",
              "valid_fraction ", valid_share, " + test_fraction ", test_share, " >= 1");
  // Vocabularies see only the rows that stay in training.
  std::vector<Vocabulary> vocabularies(names.sparse.size());
  int64_t position = 0;
  sources.train([&](const ParsedRow& row) {
    if (held_out_role(position++, valid_share, test_share) != HeldOutRole::train) return;
    for (size_t j = 0; j < row.sparse.size(); ++j) vocabularies[j].count(row.sparse[j]);
  });
  for (auto& v : vocabularies) v.finish(options.min_count);

  FeatureSchema schema(options.embedding_dim);
  for (size_t j = 0; j < names.sparse.size(); ++j) schema.add_sparse(names.sparse[j], vocabularies[j].size());
  for (const auto& name : names.dense) schema.add_dense(name);

  EncodedSplits out{schema, vocabularies, Dataset(schema), Dataset(schema), Dataset(schema)};
  position = 0;
  sources.train([&](const ParsedRow& row) {
    const auto role = held_out_role(position++, valid_share, test_share);
    encode_row(row, vocabularies,
               role == HeldOutRole::train   ? out.train
               : role == HeldOutRole::valid ? out.valid
                                            : out.test);
  });
  TORCH_CHECK(out.train.num_rows() > 0, "the training split holds no rows");
  if (sources.valid) encode_into(sources.valid, vocabularies, out.valid);
  if (sources.test) encode_into(sources.test, vocabularies, out.test);
  TORCH_CHECK(sources.valid || out.valid.num_rows() > 0, "the training split holds ", position,
              " rows, too few to hold out a validation share of ", valid_share);
  TORCH_CHECK(sources.test || out.test.num_rows() > 0, "the training split holds ", position,
              " rows, too few to hold out a test share of ", test_share);
  return out;
}

}  // namespace mtl::data
