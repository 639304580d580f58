// Turns raw row sources into datasets: vocabularies are fitted on the
// training split (two streaming passes, so a 10 GB file never sits in memory
// as raw ids), then every split is encoded with them.
#pragma once

#include <mtl/data/dataset.hpp>
#include <mtl/data/parsed_row.hpp>
#include <mtl/data/vocabulary.hpp>
#include <mtl/features.hpp>

#include <c10/util/Exception.h>

#include <string>
#include <vector>

namespace mtl::data {

/// Field names of a source, in the order its rows carry them.
struct FieldNames {
  std::vector<std::string> sparse, dense;
};

struct SplitSources {
  RowSource train;
  RowSource valid;  ///< may be empty: then the last `valid_fraction` of train is held out
  RowSource test;   ///< may be empty
};

struct EncodeOptions {
  /// Ids seen fewer times than this in the training split share row 0.
  int64_t min_count = 1;
  int64_t embedding_dim = 8;
  /// Share of the training rows held out for validation when there is no valid source.
  double valid_fraction = 0.1;
};

struct EncodedSplits {
  FeatureSchema schema;
  std::vector<Vocabulary> vocabularies;  ///< one per sparse field
  Dataset train, valid, test;
};

/// Encodes every row of `source` into `out` with `vocabularies`.
inline void encode_into(const RowSource& source, const std::vector<Vocabulary>& vocabularies, Dataset& out) {
  source([&](const ParsedRow& row) {
    TORCH_CHECK(row.sparse.size() == vocabularies.size(), "encode_into expects ", vocabularies.size(),
                " sparse fields per row, but a row holds ", row.sparse.size());
    for (size_t j = 0; j < row.sparse.size(); ++j)
      out.ids.push_back(static_cast<int32_t>(vocabularies[j].encode(row.sparse[j])));
    out.dense.insert(out.dense.end(), row.dense.begin(), row.dense.end());
    out.click.push_back(row.click);
    out.conversion.push_back(row.conversion);
  });
}

/// Moves the last `rows` rows of `from` into a new dataset.
inline Dataset split_off_tail(Dataset& from, int64_t rows) {
  Dataset tail(from.schema());
  const int64_t keep = from.num_rows() - rows, f = from.schema().num_sparse(), d = from.schema().num_dense();
  tail.ids.assign(from.ids.begin() + keep * f, from.ids.end());
  tail.dense.assign(from.dense.begin() + keep * d, from.dense.end());
  tail.click.assign(from.click.begin() + keep, from.click.end());
  tail.conversion.assign(from.conversion.begin() + keep, from.conversion.end());
  from.ids.resize(keep * f), from.dense.resize(keep * d), from.click.resize(keep), from.conversion.resize(keep);
  return tail;
}

inline EncodedSplits encode_splits(const SplitSources& sources, const FieldNames& names,
                                   const EncodeOptions& options = {}) {
  TORCH_CHECK(sources.train, "encode_splits expects a training source");
  TORCH_CHECK(options.min_count >= 1, "encode_splits expects min_count >= 1, but got ", options.min_count);
  TORCH_CHECK(options.valid_fraction > 0 && options.valid_fraction < 1,
              "encode_splits expects valid_fraction in (0, 1), but got ", options.valid_fraction);
  std::vector<Vocabulary> vocabularies(names.sparse.size());
  sources.train([&](const ParsedRow& row) {
    for (size_t j = 0; j < row.sparse.size(); ++j) vocabularies[j].count(row.sparse[j]);
  });
  for (auto& v : vocabularies) v.finish(options.min_count);

  FeatureSchema schema(options.embedding_dim);
  for (size_t j = 0; j < names.sparse.size(); ++j) schema.add_sparse(names.sparse[j], vocabularies[j].size());
  for (const auto& name : names.dense) schema.add_dense(name);

  EncodedSplits out{schema, vocabularies, Dataset(schema), Dataset(schema), Dataset(schema)};
  encode_into(sources.train, vocabularies, out.train);
  TORCH_CHECK(out.train.num_rows() > 0, "the training split holds no rows");
  if (sources.valid) {
    encode_into(sources.valid, vocabularies, out.valid);
  } else {
    const auto held_out = static_cast<int64_t>(options.valid_fraction * static_cast<double>(out.train.num_rows()));
    TORCH_CHECK(held_out > 0 && held_out < out.train.num_rows(), "the training split holds ", out.train.num_rows(),
                " rows, too few to hold out a validation share of ", options.valid_fraction);
    out.valid = split_off_tail(out.train, held_out);
  }
  if (sources.test) encode_into(sources.test, vocabularies, out.test);
  return out;
}

}  // namespace mtl::data
