// Built-in synthetic data with ground truth, shaped like Ali-CCP (23 sparse
// fields named as Ali-CCP's, 8 dense features). Users, items and context
// carry latent factors; click and conversion propensities come from them
// through knobs for task relatedness, selection bias, explicit feature-cross
// signal, deep non-linear signal, label levels and noise. Every row also
// carries its true p_click, true p_cvr and a counterfactual conversion label,
// so the entire-space CVR AUC is measurable. Deterministic for a seed: row r
// of a split depends only on (seed, split, r), whatever the compiler (every
// draw is a statement of its own, in a fixed order). The null scenario turns
// every mechanism off: the same features, labels drawn at the base rates.
#pragma once

#include <mtl/data/dataset.hpp>
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
/// drawn at the base rates (ctr_bias, cvr_bias) whatever the features, so every
/// model's expected AUC is 0.5 and every comparison's expected difference 0.
enum class SyntheticScenario { designed, null };

inline const char* scenario_name(SyntheticScenario s) { return s == SyntheticScenario::null ? "null" : "designed"; }

/// Knobs of the generator. Each says what it should do to the chain.
///
/// Example:
///   SyntheticGenerator gen(SyntheticOptions().seed(20260127).selection_bias(1.0));
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
  /// Base logits: lower is rarer. Defaults give CTR ~4% and CVR among clicks ~10%.
  TORCH_ARG(double, ctr_bias) = -4.8;
  TORCH_ARG(double, cvr_bias) = -2.8;
  /// 0..1: how much the purchase factor of an item shares with its click
  /// factor. High relatedness favours sharing (a shared bottom over single-task
  /// models); low relatedness punishes hard sharing and favours MMoE / PLE.
  TORCH_ARG(double, task_relatedness) = 0.5;
  /// Weight of item "attractiveness", which raises the click logit and lowers
  /// the purchase logit by this much per unit: the clicked population then
  /// converts less than the whole (at 1.5, clicked rows' mean true CVR is
  /// about a third of the entire space's). A CVR model trained on clicked
  /// rows learns on a population unlike the one it ranks: the gap ESMM should
  /// narrow relative to a clicked-rows CVR model, read off the entire-space CVR AUC.
  TORCH_ARG(double, selection_bias) = 1.0;
  /// Weight of an explicit pairwise cross (user profile 122 x item category
  /// 206) in the click logit: signal that cross experts capture cheaply.
  TORCH_ARG(double, cross_signal) = 1.0;
  /// Weight of a non-linear (sinusoidal) user-item term: signal that deep
  /// experts need depth for; 0 makes the logits nearly bilinear.
  TORCH_ARG(double, deep_signal) = 1.0;
  /// Standard deviation of noise added to both logits before the labels are
  /// drawn, absent from the true p columns: lowers every achievable AUC.
  TORCH_ARG(double, label_noise) = 0.0;
};

enum class Split : uint64_t { train = 1, valid = 2, test = 3 };

/// The generator's fields, in Ali-CCP's column order, with their vocabularies.
struct SyntheticField {
  const char* name;
  int64_t vocab;  ///< 0: the number of users or items
};

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
    TORCH_CHECK(options_.label_noise() >= 0.0, "SyntheticGenerator expects label_noise >= 0, but got ",
                options_.label_noise());
    build_schema();
    user_cdf_ = zipf_cdf(options_.num_users(), options_.user_zipf());
    item_cdf_ = zipf_cdf(options_.num_items(), options_.item_zipf());
    build_entities();
  }

  const FeatureSchema& schema() const noexcept { return schema_; }
  const SyntheticOptions& options() const noexcept { return options_; }

  /// Rows [first_row, first_row + rows) of `split`.
  Dataset generate(Split split, int64_t rows, int64_t first_row = 0) const {
    TORCH_CHECK(rows >= 0, "SyntheticGenerator::generate expects rows >= 0, but got ", rows);
    Dataset ds(schema_);
    ds.reserve(rows);
    ds.truth.p_click.reserve(rows), ds.truth.p_cvr.reserve(rows), ds.truth.counterfactual_conversion.reserve(rows);
    for (int64_t r = first_row; r < first_row + rows; ++r) append_row(ds, split, r);
    return ds;
  }

 private:
  // ---- hashing and random numbers: a row's draws depend only on its key ----
  static uint64_t mix(uint64_t x) {
    x += 0x9e3779b97f4a7c15ULL;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
  }
  uint64_t key(uint64_t a, uint64_t b, uint64_t c = 0) const { return mix(mix(mix(options_.seed() ^ a) ^ b) ^ c); }
  static double unit(uint64_t h) { return static_cast<double>(h >> 11) * 0x1.0p-53; }
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
    static const std::array<SyntheticField, kNumSparse> fields{{
        {"101", 0},     {"121", 98},      {"122", 14},       {"124", 3},        {"125", 8},        {"126", 4},
        {"127", 4},     {"128", 3},       {"129", 5},        {"205", 0},        {"206", 2000},     {"207", 40000},
        {"210", 30000}, {"216", 20000},   {"508", 5000},     {"509", 20000},    {"702", 6000},     {"853", 10000},
        {"301", 3},     {"109_14", 2000}, {"110_14", 40000}, {"127_14", 20000}, {"150_14", 30000},
    }};
    static const std::array<const char*, kNumDense> dense{"D109_14", "D110_14", "D127_14", "D150_14",
                                                          "D508",    "D509",    "D702",    "D853"};
    schema_ = FeatureSchema(/*default_embedding_dim=*/8);
    for (int c = 0; c < kNumSparse; ++c) {
      const int64_t vocab = c == kUser ? options_.num_users() : c == kItem ? options_.num_items() : fields[c].vocab;
      schema_.add_sparse(fields[c].name, vocab);
      vocab_[c] = vocab;
    }
    for (const char* name : dense) schema_.add_dense(name);
  }

  // ---- entities: latent factors and attributes, fixed for a seed ----
  void build_entities() {
    const int64_t k = options_.latent_dim(), users = options_.num_users(), items = options_.num_items();
    const int64_t groups = vocab_[kProfile121], categories = vocab_[kCategory];
    // Users: own factor blended with their profile group's, so profiles inform rare users.
    std::vector<double> group_factor(groups * k), category_factor(categories * k);
    for (int64_t g = 0; g < groups * k; ++g) group_factor[g] = centered(key(11, g));
    for (int64_t c = 0; c < categories * k; ++c) category_factor[c] = centered(key(12, c));
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
        user_factor_[u * k + j] = 0.8 * centered(key(26, u, j)) + 0.6 * group_factor[a.profile[0] * k + j];
    }
    // Items: click factor (category-informed), purchase-only factor, deep factor.
    item_click_.resize(items * k), item_buy_.resize(items * k), item_deep_.resize(items * k);
    item_attr_.resize(items);
    const double rho = options_.task_relatedness(), rest = std::sqrt(1.0 - rho * rho);
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
        const double click = 0.8 * centered(key(37, i, j)) + 0.6 * category_factor[b.category * k + j];
        item_click_[i * k + j] = click;
        item_buy_[i * k + j] = rho * click + rest * centered(key(38, i, j));
        item_deep_[i * k + j] = centered(key(39, i, j));
      }
    }
  }

  double dot(const std::vector<double>& a, int64_t ia, const std::vector<double>& b, int64_t ib) const {
    const int64_t k = options_.latent_dim();
    double s = 0;
    for (int64_t j = 0; j < k; ++j) s += a[ia * k + j] * b[ib * k + j];
    return s / std::sqrt(static_cast<double>(k));
  }
  static float sigmoid(double x) { return static_cast<float>(1.0 / (1.0 + std::exp(-x))); }

  void append_row(Dataset& ds, Split split, int64_t row) const {
    Stream rng{key(static_cast<uint64_t>(split), static_cast<uint64_t>(row), 0xda7a)};
    const int64_t u = sample(user_cdf_, rng.uniform()), i = sample(item_cdf_, rng.uniform());
    const int64_t scenario = rng.uniform() < 0.6 ? 0 : (rng.uniform() < 0.7 ? 1 : 2);
    const auto& a = user_attr_[u];
    const auto& b = item_attr_[i];

    std::array<int64_t, kNumSparse> id{};
    id[kUser] = u;
    for (int c = kProfile121; c <= kProfile129; ++c) id[c] = a.profile[c - kProfile121];
    id[kItem] = i, id[kCategory] = b.category, id[kShop] = b.shop, id[kIntention] = b.intention, id[kBrand] = b.brand;
    id[kCross508] = key(40, a.profile[0], b.category) % vocab_[kCross508];
    id[kCross509] = key(41, a.profile[1], b.brand) % vocab_[kCross509];
    id[kCross702] = key(42, scenario, b.category) % vocab_[kCross702];
    id[kCross853] = key(43, a.history[0] == b.category, b.shop) % vocab_[kCross853];
    id[kScenario] = scenario;
    for (int h = 0; h < 4; ++h) id[kHistory109 + h] = a.history[h];
    for (int64_t c : id) ds.ids.push_back(static_cast<int32_t>(c));

    // Click: shared latent taste + attractiveness + explicit cross + deep term + context.
    const double taste = dot(user_factor_, u, item_click_, i);
    const double cross = centered(key(50, a.profile[1], b.category));
    const double deep = 1.41 * std::sin(2.5 * dot(user_factor_, u, item_deep_, i));
    static constexpr double kScenarioEffect[3] = {0.0, -0.5, 0.3};
    const double click_logit = options_.ctr_bias() + taste + options_.selection_bias() * b.attractiveness +
                               options_.cross_signal() * cross + options_.deep_signal() * deep +
                               kScenarioEffect[scenario] + 0.5 * a.activity;
    // Purchase: a factor shared with clicks by task_relatedness, minus attractiveness, plus affordability.
    const double cvr_logit = options_.cvr_bias() + dot(user_factor_, u, item_buy_, i) -
                             options_.selection_bias() * b.attractiveness + 2.0 * (a.purchase_power - b.price) +
                             0.5 * options_.deep_signal() * deep;

    // Under the null scenario the labels take nothing from the row: the base rates alone.
    const bool null = options_.scenario() == SyntheticScenario::null;
    const double true_click_logit = null ? options_.ctr_bias() : click_logit;
    const double true_cvr_logit = null ? options_.cvr_bias() : cvr_logit;
    // One draw per statement, so that every compiler draws them in this order.
    const double noise = options_.label_noise();
    const double click_noise = noise * rng.normal();
    const double click_draw = rng.uniform();
    const double cvr_noise = noise * rng.normal();
    const double cvr_draw = rng.uniform();
    const double click = click_draw < sigmoid(true_click_logit + click_noise) ? 1.0 : 0.0;
    const double would_convert = cvr_draw < sigmoid(true_cvr_logit + cvr_noise) ? 1.0 : 0.0;
    ds.click.push_back(static_cast<float>(click));
    ds.conversion.push_back(static_cast<float>(click * would_convert));
    ds.truth.p_click.push_back(sigmoid(true_click_logit));
    ds.truth.p_cvr.push_back(sigmoid(true_cvr_logit));
    ds.truth.counterfactual_conversion.push_back(static_cast<float>(would_convert));

    // Dense features in [0, 1], as in the processed Ali-CCP files.
    const double dense[kNumDense] = {a.activity,
                                     b.popularity,
                                     b.price,
                                     a.purchase_power,
                                     unit(key(61, b.shop)),
                                     rng.uniform(),
                                     unit(key(60, u, b.category)),
                                     rng.uniform()};
    for (double v : dense) ds.dense.push_back(static_cast<float>(v));
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

  SyntheticOptions options_;
  FeatureSchema schema_;
  std::array<int64_t, kNumSparse> vocab_{};
  std::vector<double> user_cdf_, item_cdf_;
  std::vector<double> user_factor_, item_click_, item_buy_, item_deep_;
  std::vector<UserAttributes> user_attr_;
  std::vector<ItemAttributes> item_attr_;
};

}  // namespace mtl::data
