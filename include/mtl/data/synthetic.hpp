// Built-in synthetic data with ground truth, shaped like Ali-CCP (23 sparse
// fields named as Ali-CCP's, 8 dense features). Users, items and context
// carry latent factors; click and conversion propensities come from them
// through named mechanisms (shared and task-private taste, a selection
// latent no model sees, task-private non-linear terms, a four-way product of
// dense features), each with a knob, plus label levels and noise. Every row also carries its true p_click,
// true p_cvr and a counterfactual conversion label, so the entire-space CVR
// AUC is measurable. Deterministic for a seed: row r
// of a split depends only on (seed, split, r), whatever the compiler (every
// draw is a statement of its own, in a fixed order). The null scenario turns
// every mechanism off: the same features, labels drawn at the designed
// scenario's marginal rates.
#pragma once

#include <mtl/data/csv_layout.hpp>
#include <mtl/data/dataset.hpp>
#include <mtl/data/training_rows.hpp>
#include <mtl/detail/hash_mix.hpp>
#include <mtl/features.hpp>

#include <torch/arg.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

namespace mtl::data {

/// What the labels depend on. `designed`: the mechanisms below, with their
/// knobs. `null`: none of them, nor any other signal: click and conversion are
/// drawn at the designed scenario's marginal rates (its share of clicked
/// impressions and of converting clicks, with the same knobs) whatever the
/// features, so every model's expected AUC is 0.5 and every comparison's
/// expected difference 0, with as many clicks and conversions to rank.
enum class SyntheticScenario { designed, null };

inline const char* scenario_name(SyntheticScenario s) { return s == SyntheticScenario::null ? "null" : "designed"; }

/// Knobs of the generator, one per mechanism, each saying what it plants in the labels.
///
/// Example:
///   SyntheticGenerator gen(SyntheticOptions().seed(20260127).task_relatedness(0.5));
///   Dataset train = gen.generate(Split::train, 1'000'000);
struct SyntheticOptions {
  TORCH_ARG(uint64_t, seed) = 20260127;
  TORCH_ARG(SyntheticScenario, scenario) = SyntheticScenario::designed;
  /// Users and items; their ids follow Zipf laws of these exponents.
  TORCH_ARG(int64_t, num_users) = 100000;
  TORCH_ARG(int64_t, num_items) = 200000;
  TORCH_ARG(double, user_zipf) = 1.05;
  TORCH_ARG(double, item_zipf) = 1.1;
  /// Width of the latent user and item factors.
  TORCH_ARG(int64_t, latent_dim) = 8;
  /// Base logits: lower is rarer. With the other defaults, CTR is about 6% and CVR among clicks about 19%.
  TORCH_ARG(double, ctr_bias) = -4.8;
  TORCH_ARG(double, cvr_bias) = -2.8;
  /// 0..1: the correlation of the two tasks' taste terms (user factor . item
  /// factor, the largest part of each logit). Each is sqrt(r) parts a taste
  /// both tasks share and sqrt(1 - r) parts one of its own, so the correlation
  /// is r (up to the finite draw of the entity tables). The CTR task, with
  /// 1/CTR times the labels, can teach the shared part to a model that shares
  /// embeddings; the tasks' own parts (1 - r) and private terms pull the
  /// shared layers apart.
  TORCH_ARG(double, task_relatedness) = 0.8;
  /// Weight of a per-impression latent that no model sees (a mood, an
  /// impulse), standard normal, added to the click logit and subtracted from
  /// the conversion logit: missing-not-at-random selection. Clicks then come
  /// from impressions that convert less, and most so where the visible
  /// features make clicking unlikely, so P(conversion | x, click) ranks the
  /// entire space worse than P(conversion | x).
  TORCH_ARG(double, selection_latent_weight) = 1.0;
  /// Weight of each task's own non-linear term (a sine of a profile-group
  /// factor . category factor product, an independent pair of factor tables
  /// per task): structure one task needs and the other does not.
  TORCH_ARG(double, private_term_weight) = 1.0;
  /// Weight of a four-way product of dense features (user-category
  /// affinity, shop score, two context values of the impression), each
  /// centred on its mean over rows, in the click logit, scaled to unit
  /// variance: a cross network of three layers forms it exactly, a ReLU
  /// network only approximates it.
  TORCH_ARG(double, dense_product_weight) = 1.0;
  /// Standard deviation of noise added to both logits before the labels are
  /// drawn, absent from the true p columns: lowers every achievable AUC.
  TORCH_ARG(double, label_noise) = 0.0;
};

enum class Split : uint64_t { train = 1, valid = 2, test = 3 };

class SyntheticGenerator {
 public:
  static constexpr int64_t kNumSparse = 23, kNumDense = 8;

  explicit SyntheticGenerator(SyntheticOptions options = {}) : options_(options) {
    TORCH_CHECK(options_.num_users() > 0 && options_.num_items() > 0,
                "SyntheticGenerator expects positive num_users and num_items, but got ", options_.num_users(), " and ",
                options_.num_items());
    TORCH_CHECK(options_.latent_dim() > 0, "SyntheticGenerator expects latent_dim > 0, but got ",
                options_.latent_dim());
    TORCH_CHECK(options_.task_relatedness() >= 0.0 && options_.task_relatedness() <= 1.0,
                "SyntheticGenerator expects task_relatedness in [0, 1], but got ", options_.task_relatedness());
    TORCH_CHECK(options_.selection_latent_weight() >= 0.0,
                "SyntheticGenerator expects selection_latent_weight >= 0, but got ",
                options_.selection_latent_weight());
    TORCH_CHECK(options_.label_noise() >= 0.0, "SyntheticGenerator expects label_noise >= 0, but got ",
                options_.label_noise());
    build_schema();
    user_cdf_ = zipf_cdf(options_.num_users(), options_.user_zipf());
    item_cdf_ = zipf_cdf(options_.num_items(), options_.item_zipf());
    build_entities();
    if (options_.scenario() == SyntheticScenario::null) match_designed_rates();
  }

  const FeatureSchema& schema() const noexcept { return schema_; }
  const SyntheticOptions& options() const noexcept { return options_; }

  /// Weight of the taste terms in both logits, the largest part of each.
  static constexpr double kTasteWeight = 1.5;

  /// The terms of one row's logits, by mechanism, before their knobs' weights.
  struct LogitTerms {
    double click_taste = 0, buy_taste = 0;      ///< the taste terms; their correlation is task_relatedness
    double selection_latent = 0;                ///< the unseen latent, standard normal (selection_latent_weight)
    double private_click = 0, private_buy = 0;  ///< each task's own non-linear term (private_term_weight)
    double cross = 0;                           ///< the four-way product of dense features (dense_product_weight)
    double click_logit = 0, cvr_logit = 0;      ///< the true logits, every term weighted (the base rates under null)
  };

  /// The logit terms of row `row` of `split`: what the labels of generate()'s row were drawn from.
  LogitTerms logit_terms(Split split, int64_t row, uint64_t redraw = 0) const { return draw(split, row, redraw).terms; }

  /// Rows [first_row, first_row + rows) of `split`. `redraw` picks another
  /// independent draw of the split's rows from the same users, items and
  /// mechanisms (0: the split's own rows), so that training runs of several
  /// seeds can each read rows of their own while sharing the test rows.
  Dataset generate(Split split, int64_t rows, int64_t first_row = 0, uint64_t redraw = 0) const {
    TORCH_CHECK(rows >= 0, "SyntheticGenerator::generate expects rows >= 0, but got ", rows);
    Dataset ds(schema_);
    ds.reserve(rows);
    ds.truth.p_click.reserve(rows), ds.truth.p_cvr.reserve(rows), ds.truth.counterfactual_conversion.reserve(rows);
    for (int64_t r = first_row; r < first_row + rows; ++r) append_row(ds, split, r, redraw);
    return ds;
  }

  /// Rows [0, rows) of `split` (of draw `redraw`, as generate()) as a loader's
  /// source: each batch is generated when it is drawn, so memory holds no more
  /// than the batches in flight, and they are the rows generate() gives. The
  /// generator must outlive the source.
  TrainingRows rows_on_demand(Split split, int64_t rows, uint64_t redraw = 0) const {
    TORCH_CHECK(rows >= 0, "SyntheticGenerator::rows_on_demand expects rows >= 0, but got ", rows);
    return TrainingRows(rows, [this, split, rows, redraw](const std::vector<int64_t>& indices) {
      Dataset ds(schema_);
      ds.reserve(static_cast<int64_t>(indices.size()));
      for (int64_t r : indices) {
        TORCH_CHECK(r >= 0 && r < rows, "SyntheticGenerator::rows_on_demand: row ", r, " is outside [0, ", rows, ")");
        append_row(ds, split, r, redraw);
      }
      return ds.slice(0, ds.num_rows());
    });
  }

 private:
  // ---- hashing and random numbers: a row's draws depend only on its key ----
  static uint64_t mix(uint64_t x) { return mtl::detail::mix64(x); }
  uint64_t key(uint64_t a, uint64_t b, uint64_t c = 0) const { return mix(mix(mix(options_.seed() ^ a) ^ b) ^ c); }
  static double unit(uint64_t h) { return mtl::detail::unit_interval(h); }
  /// Uniform with unit variance, a cheap stand-in for a normal where shape does not matter.
  static double centered(uint64_t h) { return (unit(h) - 0.5) * 3.4641016151377544; }

  struct Stream {
    uint64_t state;
    uint64_t next() { return mix(state += 0x9e3779b97f4a7c15ULL); }
    double uniform() { return unit(next()); }
    double normal() {
      const double u1 = std::max(uniform(), 1e-300), u2 = uniform();
      return std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2);
    }
  };

  static std::vector<double> zipf_cdf(int64_t n, double s) {
    std::vector<double> cdf(n);
    double total = 0;
    for (int64_t r = 0; r < n; ++r) cdf[r] = (total += 1.0 / std::pow(static_cast<double>(r + 1), s));
    for (auto& c : cdf) c /= total;
    return cdf;
  }
  static int64_t sample(const std::vector<double>& cdf, double u) {
    return std::min<int64_t>(std::lower_bound(cdf.begin(), cdf.end(), u) - cdf.begin(),
                             static_cast<int64_t>(cdf.size()) - 1);
  }

  // ---- the schema ----
  // Column order of the processed Ali-CCP files.
  enum Column : int {
    kUser = 0,
    kProfile121,
    kProfile122,
    kProfile124,
    kProfile125,
    kProfile126,
    kProfile127,
    kProfile128,
    kProfile129,
    kItem,
    kCategory,
    kShop,
    kIntention,
    kBrand,
    kCross508,
    kCross509,
    kCross702,
    kCross853,
    kScenario,
    kHistory109,
    kHistory110,
    kHistory127,
    kHistory150
  };

  void build_schema() {
    // Vocabulary sizes in the order of Ali-CCP's sparse columns, whose names the fields take (0: users or items).
    static const std::array<int64_t, kNumSparse> vocab_sizes{0,    98,    14,   3,     8,     4,     4,    3,
                                                             5,    0,     2000, 40000, 30000, 20000, 5000, 20000,
                                                             6000, 10000, 3,    2000,  40000, 20000, 30000};
    const auto aliccp = CsvLayout::aliccp();
    TORCH_CHECK(aliccp.sparse.size() == kNumSparse && aliccp.dense.size() == kNumDense,
                "SyntheticGenerator expects Ali-CCP's layout to have ", kNumSparse, " sparse and ", kNumDense,
                " dense columns");
    schema_ = FeatureSchema(/*default_embedding_dim=*/8);
    for (int c = 0; c < kNumSparse; ++c) {
      const int64_t vocab = c == kUser ? options_.num_users() : c == kItem ? options_.num_items() : vocab_sizes[c];
      schema_.add_sparse(aliccp.sparse[c], vocab);
      vocab_[c] = vocab;
    }
    for (const auto& name : aliccp.dense) schema_.add_dense(name);
  }

  // ---- entities: latent factors and attributes, fixed for a seed ----
  void build_entities() {
    const int64_t k = options_.latent_dim(), users = options_.num_users(), items = options_.num_items();
    const int64_t groups = vocab_[kProfile121], categories = vocab_[kCategory];
    // Users: own factor blended with their profile group's (kOwnShare, kGroupShare).
    std::vector<double> group_factor(groups * k);
    for (int64_t g = 0; g < groups * k; ++g) group_factor[g] = centered(key(11, g));
    // One category factor per taste (shared, click's own, purchase's own), so the three stay uncorrelated.
    std::array<std::vector<double>, 3> category_factor;
    for (int t = 0; t < 3; ++t) {
      category_factor[t].resize(categories * k);
      for (int64_t c = 0; c < categories * k; ++c) category_factor[t][c] = centered(key(12 + t, c));
    }
    user_factor_.resize(users * k);
    user_attr_.resize(users);
    for (int64_t u = 0; u < users; ++u) {
      auto& a = user_attr_[u];
      for (int c = kProfile121; c <= kProfile129; ++c) a.profile[c - kProfile121] = mix(key(20, u, c)) % vocab_[c];
      a.history[0] = key(21, u) % vocab_[kHistory109];
      a.history[1] = key(22, u) % vocab_[kHistory110];
      a.history[2] = key(23, u) % vocab_[kHistory127];
      a.history[3] = key(24, u) % vocab_[kHistory150];
      a.purchase_power = unit(key(25, u));
      a.activity = 1.0 - std::log1p(static_cast<double>(u)) / std::log1p(static_cast<double>(users));
      for (int64_t j = 0; j < k; ++j)
        user_factor_[u * k + j] =
            kOwnShare * centered(key(26, u, j)) + kGroupShare * group_factor[a.profile[0] * k + j];
    }
    // Items: taste factors (category-informed): one both tasks share, one each of their own.
    item_shared_.resize(items * k), item_click_.resize(items * k), item_buy_.resize(items * k);
    item_attr_.resize(items);
    for (int64_t i = 0; i < items; ++i) {
      auto& b = item_attr_[i];
      b.category = key(30, i) % categories;
      b.shop = key(31, i) % vocab_[kShop];
      b.intention = key(32, i) % vocab_[kIntention];
      b.brand = key(33, i) % vocab_[kBrand];
      b.attractiveness = centered(key(34, i));
      b.price = 0.5 * unit(key(35, i)) + 0.5 * unit(key(36, b.category));
      b.popularity = 1.0 - std::log1p(static_cast<double>(i)) / std::log1p(static_cast<double>(items));
      for (int64_t j = 0; j < k; ++j) {
        item_shared_[i * k + j] =
            kOwnShare * centered(key(37, i, j)) + kGroupShare * category_factor[0][b.category * k + j];
        item_click_[i * k + j] =
            kOwnShare * centered(key(38, i, j)) + kGroupShare * category_factor[1][b.category * k + j];
        item_buy_[i * k + j] =
            kOwnShare * centered(key(39, i, j)) + kGroupShare * category_factor[2][b.category * k + j];
      }
    }
    // The shop score's mean and spread over rows (items drawn by popularity): the cross is centred where the
    // rows are, so no pair of its factors carries part of it.
    double mean = 0, second_moment = 0;
    for (int64_t i = 0; i < items; ++i) {
      const double weight = item_cdf_[i] - (i > 0 ? item_cdf_[i - 1] : 0.0), score = unit(key(61, item_attr_[i].shop));
      mean += weight * score, second_moment += weight * score * score;
    }
    shop_score_mean_ = mean, shop_score_sd_ = std::sqrt(second_moment - mean * mean);
    // Task-private non-linear terms: a sine of a profile-group factor . category factor product, one pair of
    // factor tables per task, tabled per (group, category).
    private_click_.resize(groups * categories), private_buy_.resize(groups * categories);
    for (int task = 0; task < 2; ++task) {
      std::vector<double> g_factor(groups * k), c_factor(categories * k);
      for (int64_t g = 0; g < groups * k; ++g) g_factor[g] = centered(key(16 + 2 * task, g));
      for (int64_t c = 0; c < categories * k; ++c) c_factor[c] = centered(key(17 + 2 * task, c));
      auto& table = task == 0 ? private_click_ : private_buy_;
      for (int64_t g = 0; g < groups; ++g)
        for (int64_t c = 0; c < categories; ++c)
          table[g * categories + c] = 1.41 * std::sin(2.5 * dot(g_factor, g, c_factor, c));
    }
  }

  double dot(const std::vector<double>& a, int64_t ia, const std::vector<double>& b, int64_t ib) const {
    const int64_t k = options_.latent_dim();
    double s = 0;
    for (int64_t j = 0; j < k; ++j) s += a[ia * k + j] * b[ib * k + j];
    return s / std::sqrt(static_cast<double>(k));
  }
  /// A user's (item's) factor: these parts its own and its profile group's (category's), unit variance in all.
  /// Mostly the group's, so that a model learns most of the taste within one pass over the data.
  static constexpr double kOwnShare = 0.5, kGroupShare = 0.8660254037844386;
  static float sigmoid(double x) { return static_cast<float>(1.0 / (1.0 + std::exp(-x))); }

  /// One row as drawn: ids, dense values, labels and the terms of its logits.
  struct DrawnRow {
    std::array<int64_t, kNumSparse> ids{};
    std::array<double, kNumDense> dense{};
    double click = 0, would_convert = 0;
    LogitTerms terms;
  };

  /// The key of a split's rows: the split itself for its own draw, mixed with `redraw` for another.
  static uint64_t row_stream(Split split, uint64_t redraw) {
    const auto id = static_cast<uint64_t>(split);
    return redraw == 0 ? id : mix(id ^ mix(redraw ^ 0x5eed));
  }

  DrawnRow draw(Split split, int64_t row, uint64_t redraw = 0) const {
    DrawnRow out;
    Stream rng{key(row_stream(split, redraw), static_cast<uint64_t>(row), 0xda7a)};
    const int64_t u = sample(user_cdf_, rng.uniform()), i = sample(item_cdf_, rng.uniform());
    const int64_t scenario = rng.uniform() < 0.6 ? 0 : (rng.uniform() < 0.7 ? 1 : 2);
    const auto& a = user_attr_[u];
    const auto& b = item_attr_[i];

    auto& id = out.ids;
    id[kUser] = u;
    for (int c = kProfile121; c <= kProfile129; ++c) id[c] = a.profile[c - kProfile121];
    id[kItem] = i, id[kCategory] = b.category, id[kShop] = b.shop, id[kIntention] = b.intention, id[kBrand] = b.brand;
    id[kCross508] = key(40, a.profile[0], b.category) % vocab_[kCross508];
    id[kCross509] = key(41, a.profile[1], b.brand) % vocab_[kCross509];
    id[kCross702] = key(42, scenario, b.category) % vocab_[kCross702];
    id[kCross853] = key(43, a.history[0] == b.category, b.shop) % vocab_[kCross853];
    id[kScenario] = scenario;
    for (int h = 0; h < 4; ++h) id[kHistory109 + h] = a.history[h];

    auto& t = out.terms;
    // Taste: sqrt(r) parts shared, sqrt(1 - r) parts each task's own, so the two terms correlate at r.
    const double r = options_.task_relatedness();
    const double shared_taste = dot(user_factor_, u, item_shared_, i);
    t.click_taste = std::sqrt(r) * shared_taste + std::sqrt(1.0 - r) * dot(user_factor_, u, item_click_, i);
    t.buy_taste = std::sqrt(r) * shared_taste + std::sqrt(1.0 - r) * dot(user_factor_, u, item_buy_, i);
    const int64_t cell = a.profile[0] * vocab_[kCategory] + b.category;
    t.private_click = private_click_[cell], t.private_buy = private_buy_[cell];
    // The dense features of the cross: user-category affinity, shop score and two context values of the impression.
    const double affinity = unit(key(60, u, b.category)), shop_score = unit(key(61, b.shop)), context = rng.uniform();
    const double second_context = rng.uniform();
    // Unit variance: three uniforms (variance 1/12 each, so 12^1.5 = 41.57) and the standardised shop score.
    t.cross = 41.569219381653056 * (affinity - 0.5) * (context - 0.5) * (second_context - 0.5) *
              (shop_score - shop_score_mean_) / shop_score_sd_;
    t.selection_latent = rng.normal();
    static constexpr double kScenarioEffect[3] = {0.0, -0.5, 0.3};
    const double click_logit = options_.ctr_bias() + kTasteWeight * t.click_taste + 0.5 * b.attractiveness +
                               options_.private_term_weight() * t.private_click +
                               options_.dense_product_weight() * t.cross + kScenarioEffect[scenario] +
                               0.5 * a.activity + options_.selection_latent_weight() * t.selection_latent;
    const double cvr_logit = options_.cvr_bias() + kTasteWeight * t.buy_taste + (a.purchase_power - b.price) +
                             options_.private_term_weight() * t.private_buy -
                             options_.selection_latent_weight() * t.selection_latent;

    // Under the null scenario the labels take nothing from the row: the base rates alone.
    const bool null = options_.scenario() == SyntheticScenario::null;
    t.click_logit = null ? null_click_logit_ : click_logit;
    t.cvr_logit = null ? null_cvr_logit_ : cvr_logit;
    // One draw per statement, so that every compiler draws them in this order.
    const double noise = options_.label_noise();
    const double click_noise = noise * rng.normal();
    const double click_draw = rng.uniform();
    const double cvr_noise = noise * rng.normal();
    const double cvr_draw = rng.uniform();
    out.click = click_draw < sigmoid(t.click_logit + click_noise) ? 1.0 : 0.0;
    out.would_convert = cvr_draw < sigmoid(t.cvr_logit + cvr_noise) ? 1.0 : 0.0;

    // Dense features in [0, 1], as in the processed Ali-CCP files.
    out.dense = {a.activity, b.popularity, b.price, a.purchase_power, shop_score, context, affinity, second_context};
    return out;
  }

  void append_row(Dataset& ds, Split split, int64_t row, uint64_t redraw) const {
    const auto d = draw(split, row, redraw);
    for (int64_t c : d.ids) ds.ids.push_back(static_cast<int32_t>(c));
    for (double v : d.dense) ds.dense.push_back(static_cast<float>(v));
    ds.click.push_back(static_cast<float>(d.click));
    ds.conversion.push_back(static_cast<float>(d.click * d.would_convert));
    ds.truth.p_click.push_back(sigmoid(d.terms.click_logit));
    ds.truth.p_cvr.push_back(sigmoid(d.terms.cvr_logit));
    ds.truth.counterfactual_conversion.push_back(static_cast<float>(d.would_convert));
  }

  struct UserAttributes {
    std::array<int64_t, 8> profile{};  ///< fields 121..129
    std::array<int64_t, 4> history{};  ///< fields 109_14, 110_14, 127_14, 150_14
    double purchase_power = 0, activity = 0;
  };
  struct ItemAttributes {
    int64_t category = 0, shop = 0, intention = 0, brand = 0;
    double attractiveness = 0, price = 0, popularity = 0;
  };

  /// The null scenario's label logits: the designed scenario's marginal click
  /// rate and conversion rate among clicks, measured on rows of a draw of
  /// their own (`kMarginalRows`), so that both scenarios rank as many clicks
  /// and conversions.
  static constexpr int64_t kMarginalRows = 100000;
  static constexpr uint64_t kMarginalDraw = 0x6d617267696e616cULL;
  void match_designed_rates() {
    SyntheticOptions designed = options_;
    designed.scenario(SyntheticScenario::designed);
    const SyntheticGenerator generator(designed);
    double clicks = 0, conversions = 0;
    for (int64_t r = 0; r < kMarginalRows; ++r) {
      const auto t = generator.logit_terms(Split::train, r, kMarginalDraw);
      const double p_click = 1.0 / (1.0 + std::exp(-t.click_logit));
      clicks += p_click, conversions += p_click / (1.0 + std::exp(-t.cvr_logit));
    }
    const auto logit = [](double p) { return std::log(p / (1.0 - p)); };
    null_click_logit_ = logit(clicks / kMarginalRows);
    null_cvr_logit_ = logit(conversions / clicks);
  }

  SyntheticOptions options_;
  double null_click_logit_ = options_.ctr_bias(), null_cvr_logit_ = options_.cvr_bias();
  FeatureSchema schema_;
  std::array<int64_t, kNumSparse> vocab_{};
  std::vector<double> user_cdf_, item_cdf_;
  std::vector<double> user_factor_, item_shared_, item_click_, item_buy_;
  std::vector<double> private_click_, private_buy_;                     ///< [group * categories + category]
  double shop_score_mean_ = 0.5, shop_score_sd_ = 0.28867513459481287;  ///< over rows; set by build_entities
  std::vector<UserAttributes> user_attr_;
  std::vector<ItemAttributes> item_attr_;
};

}  // namespace mtl::data
