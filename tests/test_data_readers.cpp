// Tests of the readers (processed Ali-CCP, AliExpress, raw Ali-CCP), the
// vocabularies, the binary cache and the batch loader.
#include "test_helpers.hpp"

#include <mtl/data/batch_loader.hpp>
#include <mtl/data/binary_cache.hpp>
#include <mtl/data/csv_reader.hpp>
#include <mtl/data/layout_rules.hpp>
#include <mtl/data/split_files.hpp>
#include <mtl/data/synthetic.hpp>

#include <filesystem>
#include <fstream>
#include <random>
#include <set>
#include <sstream>
#include <unordered_map>

using namespace mtl::data;
using mtl_test::ScratchDir;
namespace fs = std::filesystem;

namespace {

/// A tiny CSV layout: two id columns, one dense column.
CsvLayout tiny_layout() {
  CsvLayout l;
  l.name = "tiny";
  l.sparse = {"user", "item"};
  l.dense = {"price"};
  l.conversion = "buy";
  return l;
}
const char* kTinyHeader = "click,buy,user,item,price,unused\n";

struct Counts {
  int64_t rows = 0, clicks = 0, conversions = 0;
};
Counts count_rows(const std::string& path, const CsvLayout& layout) {
  Counts c;
  read_csv(path, layout,
           [&](const ParsedRow& row) { ++c.rows, c.clicks += row.click, c.conversions += row.conversion; });
  return c;
}

}  // namespace

// Every sample file in tests/data reads with its layout, with the rows and labels it holds.
TEST_CASE("readers accept the real Ali-CCP and AliExpress samples") {
  const std::string dir = MTL_TEST_DATA_DIR;
  struct Expected {
    const char* file;
    CsvLayout layout;
    Counts counts;
  };
  const std::vector<Expected> files{
      {"aliccp/ali_ccp_train_sample.csv", CsvLayout::aliccp(), {100, 7, 1}},
      {"aliccp/ali_ccp_val_sample.csv", CsvLayout::aliccp(), {50, 3, 1}},
      {"aliccp/ali_ccp_test_sample.csv", CsvLayout::aliccp(), {50, 2, 1}},
      {"aliexpress/aliexpress_train_sample.csv", CsvLayout::aliexpress(), {100, 60, 2}},
      {"aliexpress/aliexpress_test_sample.csv", CsvLayout::aliexpress(), {20, 10, 2}},
  };
  for (const auto& e : files) {
    INFO(e.file);
    const auto c = count_rows(dir + "/" + e.file, e.layout);
    REQUIRE(c.rows == e.counts.rows);
    REQUIRE(c.clicks == e.counts.clicks);
    REQUIRE(c.conversions == e.counts.conversions);
  }
  auto aliccp = load_csv_splits(find_split_files(dir + "/aliccp"), CsvLayout::aliccp());
  REQUIRE(aliccp.schema.num_sparse() == 23);
  REQUIRE(aliccp.schema.num_dense() == 8);
  REQUIRE(aliccp.train.num_rows() == 100);
  REQUIRE(aliccp.valid.num_rows() == 50);
  REQUIRE(aliccp.test.num_rows() == 50);
  // AliExpress ships no validation file: a share of the training rows (by position hash) is held out.
  auto aliexpress = load_csv_splits(find_split_files(dir + "/aliexpress"), LayoutRules::aliexpress());
  REQUIRE(aliexpress.schema.num_sparse() == 16);
  REQUIRE(aliexpress.schema.num_dense() == 63);
  REQUIRE(aliexpress.train.num_rows() == 92);
  REQUIRE(aliexpress.valid.num_rows() == 8);
  REQUIRE(aliexpress.test.num_rows() == 20);
}

// A byte-order mark, CRLF line ends, unused columns and a missing final newline are accepted.
TEST_CASE("CSV reader accepts BOM, CRLF and extra columns") {
  ScratchDir tmp("csv_ok");
  const auto path = tmp.write("a.csv",
                              "\xEF\xBB\xBF"
                              "click,buy,user,item,price,unused\r\n1,1,5,7,0.5,x\r\n0,0,6,7,1e-3,y");
  std::vector<ParsedRow> rows;
  read_csv(path, tiny_layout(), [&](const ParsedRow& r) { rows.push_back(r); });
  REQUIRE(rows.size() == 2);
  REQUIRE(rows[0].sparse == std::vector<int64_t>{5, 7});
  REQUIRE(rows[0].dense[0] == 0.5f);
  REQUIRE(rows[1].dense[0] == 1e-3f);
  REQUIRE(rows[0].conversion == 1.f);
}

// A split file without a header line: detected when its first line is a row of numbers with as many fields as
// the training file's header, refused naming both counts when it has another count; `absent` reads every line.
TEST_CASE("CSV reader reads a file without a header line with the training file's columns") {
  ScratchDir tmp("csv_headerless");
  const auto path = tmp.write("test.csv", "1,1,5,7,0.5\n0,0,6,7,1e-3\n");
  CsvReadOptions read;
  read.header = HeaderLine::detect;
  read.columns = {"click", "buy", "user", "item", "price"}, read.columns_from = "train.csv";
  std::vector<ParsedRow> rows;
  CsvReadReport report;
  read_csv(
      path, tiny_layout(), [&](const ParsedRow& r) { rows.push_back(r); }, read, &report);
  REQUIRE(rows.size() == 2);
  REQUIRE(rows[0].sparse == std::vector<int64_t>{5, 7});
  REQUIRE((!report.header_line && report.rows == 2));
  // A file with its header is read as before.
  const auto with_header = tmp.write("valid.csv", "click,buy,user,item,price\n1,0,5,7,0.5\n");
  read_csv(
      with_header, tiny_layout(), [](const ParsedRow&) {}, read, &report);
  REQUIRE((report.header_line && report.rows == 1));
  const auto narrow = tmp.write("narrow.csv", "1,1,5,7\n");
  REQUIRE_TORCH_ERROR(read_csv(
                          narrow, tiny_layout(), [](const ParsedRow&) {}, read),
                      "narrow.csv:1: the first line is data, not a header naming the tiny layout's columns, but it "
                      "has 4 fields where train.csv's header has 5");
  read.header = HeaderLine::absent;
  rows.clear();
  read_csv(
      path, tiny_layout(), [&](const ParsedRow& r) { rows.push_back(r); }, read, &report);
  REQUIRE(rows.size() == 2);
  // Without detection, a data line where the header belongs is refused as before.
  REQUIRE_TORCH_ERROR(read_csv(path, tiny_layout(), [](const ParsedRow&) {}), "the header has no column");
}

// A conversion without a click: refused by default, or dropped, or counted as a click, and counted.
TEST_CASE("CSV reader treats a conversion without a click as asked") {
  ScratchDir tmp("csv_conversion_without_click");
  const auto path = tmp.write("train.csv", "click,buy,user,item,price\n1,1,5,7,0.5\n0,1,6,7,1\n0,0,6,8,1\n0,1,1,2,3\n");
  REQUIRE_TORCH_ERROR(read_csv(path, tiny_layout(), [](const ParsedRow&) {}),
                      "train.csv:3: buy is 1 but click is 0; a conversion needs a click");
  CsvReadOptions read;
  CsvReadReport report;
  std::vector<ParsedRow> rows;
  read.conversion_without_click = ConversionWithoutClick::drop;
  read_csv(
      path, tiny_layout(), [&](const ParsedRow& r) { rows.push_back(r); }, read, &report);
  REQUIRE((rows.size() == 2 && report.rows == 2 && report.conversions_without_click_dropped == 2));
  REQUIRE(rows[1].sparse == std::vector<int64_t>{6, 8});
  rows.clear();
  read.conversion_without_click = ConversionWithoutClick::as_click;
  read_csv(
      path, tiny_layout(), [&](const ParsedRow& r) { rows.push_back(r); }, read, &report);
  REQUIRE((rows.size() == 4 && report.conversions_without_click_as_click == 2));
  REQUIRE((rows[1].click == 1.f && rows[1].conversion == 1.f && rows[2].click == 0.f));
  // Through the splits and their cache: the counts per file come back with a cache hit too.
  const SplitFiles files{path, path, path};
  const auto fresh = load_csv_splits(files, tiny_layout(), {}, tmp / "cache", read);
  const auto cached = load_csv_splits(files, tiny_layout(), {}, tmp / "cache", read);
  REQUIRE(cached.train.num_rows() == 4);
  REQUIRE(fresh.reads.at(path).conversions_without_click_as_click == 2);
  REQUIRE(cached.reads.at(path).conversions_without_click_as_click == 2);
  REQUIRE(cached.reads.at(path).rows == 4);
}

// Each malformed input is refused with the file, line, column and what was expected.
TEST_CASE("CSV reader refuses bad input with its place") {
  ScratchDir tmp("csv_bad");
  auto refused = [&](const std::string& body, const std::string& expected) {
    const auto path = tmp.write("bad.csv", body);
    INFO("input: " << body);
    REQUIRE_TORCH_ERROR(count_rows(path, tiny_layout()), expected);
  };
  const std::string h = kTinyHeader;
  refused("", "the file is empty, expected a header line");
  refused("click,buy,user,price\n", "the header has no column 'item', which the tiny layout needs");
  refused(h + "1,0,5,7,0.5\n", "bad.csv:2: expected 6 comma-separated fields (as the header), got 5");
  refused(h + "1,0,5,7,0.5,u\n\n1,0,5,7,0.5,u\n", "bad.csv:3: the line is blank");
  refused(h + "1,0,abc,7,0.5,u\n", "bad.csv:2, column 'user': expected an integer id, got 'abc'");
  refused(h + "1,0,-4,7,0.5,u\n", "bad.csv:2, column 'user': expected an integer id >= 0, got -4");
  refused(h + "1,0,4,7,nan,u\n", "bad.csv:2, column 'price': expected a finite number, got 'nan'");
  refused(h + "1,0,4,7,inf,u\n", "column 'price': expected a finite number");
  refused(h + "1,0,4,7,,u\n", "column 'price': expected a number, got ''");
  refused(h + "2,0,4,7,1,u\n", "column 'click': expected a 0/1 label, got '2'");
  refused(h + "0,1,4,7,1,u\n", "bad.csv:2: buy is 1 but click is 0; a conversion needs a click");
  refused(h + "yes,0,4,7,1,u\n", "bad.csv:2, column 'click': expected a 0/1 label, got 'yes'");
  refused(h + "1,,4,7,1,u\n", "bad.csv:2, column 'buy': expected a 0/1 label, got ''");
  refused(h + "1,0,4,,1,u\n", "bad.csv:2, column 'item': expected an integer id, got ''");
  refused(h + "1,0,4.5,7,1,u\n", "bad.csv:2, column 'user': expected an integer id, got '4.5'");
  refused(h + "1,0,4,7,-inf,u\n", "bad.csv:2, column 'price': expected a finite number, got '-inf'");
  refused("user,item,price,buy\n1,2,3,0\n", "bad.csv:1: the header has no column 'click', which the tiny layout needs");
  refused("click,user,item,price\n1,2,3,0\n", "bad.csv:1: the header has no column 'buy', which the tiny layout needs");
  // A last line cut short (no newline), with and without its CR.
  refused(h + "1,0,5,7,0.5,u\n0,0,5", "bad.csv:3: expected 6 comma-separated fields (as the header), got 3");
  refused(h + "1,0,5,7,0.5,u\r\n0,0,5,7\r", "bad.csv:3: expected 6 comma-separated fields (as the header), got 4");
  // 10 MB lines: one huge field (beyond int64) and a line of commas; the message shows 40 characters.
  refused(h + "1,0," + std::string(10'000'000, '9') + ",7,0.5,u\n",
          "bad.csv:2, column 'user': expected an integer id, got '9999999999999999999999999999999999999999...'");
  refused(h + std::string(10'000'000, ',') + "\n",
          "bad.csv:2: expected 6 comma-separated fields (as the header), got 10000001");
  REQUIRE_TORCH_ERROR(count_rows((tmp.path / "missing.csv").string(), tiny_layout()), "cannot open");
  // A header alone reads as zero rows; encoding refuses an empty training split.
  const auto header_only = tmp.write("h.csv", h);
  REQUIRE(count_rows(header_only, tiny_layout()).rows == 0);
  REQUIRE_TORCH_ERROR(load_csv_splits({header_only, "", ""}, tiny_layout()), "the training split holds no rows");
}

// Vocabularies are fitted on train with a minimum count; rare and unseen ids map to row 0.
TEST_CASE("vocabularies from the training split") {
  ScratchDir tmp("vocab");
  const std::string h = kTinyHeader;
  const auto train = tmp.write(
      "train.csv", h + "0,0,50,7,1,u\n0,0,50,8,1,u\n1,0,30,7,1,u\n0,0,30,9,1,u\n0,0,10,7,1,u\n0,0,30,8,1,u\n");
  const auto test = tmp.write("test.csv", h + "0,0,30,7,1,u\n0,0,99,9,1,u\n");
  EncodeOptions options;
  options.min_count = 2, options.valid_fraction = 0.3;
  auto splits = load_csv_splits({train, "", test}, tiny_layout(), options);
  // The position hash holds out the fourth row (30, 9) for validation; the
  // vocabularies see the other five. user: 30 and 50 kept (rows 1, 2 in id
  // order), 10 rare; item: 7 and 8 kept; 9, only in the held-out row, unseen.
  REQUIRE(splits.vocabularies[0].ids() == std::vector<int64_t>{30, 50});
  REQUIRE(splits.vocabularies[1].ids() == std::vector<int64_t>{7, 8});
  REQUIRE(splits.schema.sparse_fields()[0].vocab_size == 3);
  REQUIRE(splits.train.ids == std::vector<int32_t>{2, 1, 2, 2, 1, 1, 0, 1, 1, 2});
  REQUIRE(splits.valid.ids == std::vector<int32_t>{1, 0});
  REQUIRE(splits.test.ids == std::vector<int32_t>{1, 1, 0, 0});
}

// A vocabulary maps every kept id to its row and anything else to 0, as a
// node-based map would, over ids of any sign and spread, with repeats.
TEST_CASE("vocabulary lookups agree with a map") {
  std::mt19937_64 rng(11);
  std::vector<int64_t> ids;
  std::unordered_map<int64_t, int64_t> expected;
  for (int i = 0; i < 5000; ++i) {
    const int64_t id = i % 3 == 0 ? static_cast<int64_t>(rng()) : static_cast<int64_t>(rng() % 20000) - 10000;
    ids.push_back(id);
    expected.emplace(id, static_cast<int64_t>(ids.size()));  // a repeated id keeps its first row
  }
  Vocabulary vocabulary;
  vocabulary.set_ids(ids);
  REQUIRE(vocabulary.size() == 5001);
  for (const auto id : ids) REQUIRE(vocabulary.encode(id) == expected.at(id));
  int64_t unseen = 0;
  for (int64_t id = -30000; id < 30000; ++id)
    if (!expected.count(id)) {
      REQUIRE(vocabulary.encode(id) == 0);
      ++unseen;
    }
  REQUIRE(unseen > 40000);
  REQUIRE(Vocabulary().encode(7) == 0);
}

// Without validation or test files, shares of the training rows are held out:
// the same rows on every run, spread over the file, none in two splits.
TEST_CASE("held-out shares of the training file") {
  ScratchDir tmp("held_out");
  std::string body = kTinyHeader;
  for (int i = 0; i < 2000; ++i) body += "0,0," + std::to_string(i) + "," + std::to_string(i % 7) + ",1,u\n";
  const auto train = tmp.write("train.csv", body);
  EncodeOptions options;
  options.valid_fraction = 0.1, options.test_fraction = 0.2;
  const auto a = load_csv_splits({train, "", ""}, tiny_layout(), options);
  const auto b = load_csv_splits({train, "", ""}, tiny_layout(), options);
  REQUIRE(a.train.num_rows() + a.valid.num_rows() + a.test.num_rows() == 2000);
  REQUIRE(a.valid.num_rows() > 150);
  REQUIRE(a.valid.num_rows() < 250);
  REQUIRE(a.test.num_rows() > 340);
  REQUIRE(a.test.num_rows() < 460);
  REQUIRE(a.valid.ids == b.valid.ids);
  REQUIRE(a.test.ids == b.test.ids);
  // Every user id is unique, so held-out rows have ids the vocabulary never saw.
  for (int32_t id : a.valid.ids) REQUIRE(id <= 7);
  // Held-out rows come from the whole file, not its tail.
  int64_t first_half = 0;
  for (int64_t p = 0; p < 1000; ++p) first_half += held_out_role(p, 0.1, 0.2) == HeldOutRole::valid;
  REQUIRE(first_half > 60);
  REQUIRE(first_half < 140);
  REQUIRE_TORCH_ERROR(
      load_csv_splits({tmp.write("few.csv", std::string(kTinyHeader) + "0,0,1,1,1,u\n"), "", ""}, tiny_layout()),
      "too few to hold out a validation share of 0.1");
}

// The layout a header gives under each set of rules, and the errors of a header that does not fit.
TEST_CASE("layouts from the header") {
  auto split = [](const std::string& line) {
    std::vector<std::string> out;
    std::stringstream ss(line);
    for (std::string item; std::getline(ss, item, ',');) out.push_back(item);
    return out;
  };
  const auto full = split(
      "click,purchase,101,121,122,124,125,126,127,128,129,205,206,207,210,216,508,509,702,853,301,109_14,110_14,"
      "127_14,150_14,D109_14,D110_14,D127_14,D150_14,D508,D509,D702,D853");
  const auto preset = CsvLayout::aliccp();
  const auto found = LayoutRules::aliccp().resolve(full, "full.csv");
  REQUIRE(found.sparse == preset.sparse);
  REQUIRE(found.dense == preset.dense);
  REQUIRE(found.signature() == preset.signature());
  // The 18 sparse fields most papers use, without dense columns.
  const auto paper = LayoutRules::aliccp().resolve(
      split("click,purchase,101,121,122,124,125,126,127,128,129,205,206,207,216,508,509,702,853,301"), "p.csv");
  REQUIRE(paper.sparse.size() == 18);
  REQUIRE(paper.dense.empty());
  REQUIRE(paper.conversion == "purchase");
  std::vector<std::string> aliexpress{"search_id"};
  for (int i = 1; i <= 16; ++i) aliexpress.push_back("categorical_" + std::to_string(i));
  for (int i = 1; i <= 63; ++i) aliexpress.push_back("numerical_" + std::to_string(i));
  aliexpress.insert(aliexpress.end(), {"click", "conversion"});
  const auto ae = LayoutRules::aliexpress().resolve(aliexpress, "ae.csv");
  REQUIRE(ae.sparse == CsvLayout::aliexpress().sparse);
  REQUIRE(ae.dense == CsvLayout::aliexpress().dense);

  const auto header = split("click,buy,user,item,price,score");
  LayoutRules rules;
  rules.name = "shop";
  rules.conversion = "buy";
  REQUIRE(rules.resolve(header, "s.csv").sparse == split("user,item,price,score"));
  rules.dense = {"price"};
  REQUIRE(rules.resolve(header, "s.csv").sparse == split("user,item,score"));
  REQUIRE(rules.resolve(header, "s.csv").dense == split("price"));
  rules.sparse = {"item", "user"};  // header order is kept
  REQUIRE(rules.resolve(header, "s.csv").sparse == split("user,item"));
  REQUIRE(rules.resolve(header, "s.csv").dense == split("price"));

  REQUIRE_TORCH_ERROR(LayoutRules::aliccp().resolve(split("click,buy,101"), "x.csv"),
                      "x.csv:1: the header has no column 'purchase', the aliccp layout's conversion label");
  REQUIRE_TORCH_ERROR(LayoutRules::aliccp().resolve(split("click,buy,101"), "x.csv"),
                      "the header holds 3 columns: click,buy,101");
  REQUIRE_TORCH_ERROR(LayoutRules::aliccp().resolve(split("click,purchase,101,101"), "x.csv"),
                      "x.csv:1: the header names column '101' twice");
  REQUIRE_TORCH_ERROR(LayoutRules::aliccp().resolve(split("click,purchase,D101"), "x.csv"),
                      "x.csv:1: the aliccp layout found no sparse id column");
  rules.sparse = {"user", "age"};
  REQUIRE_TORCH_ERROR(rules.resolve(header, "s.csv"),
                      "s.csv:1: the header has no column 'age', the shop layout's "
                      "listed sparse field");
  rules.sparse = {"user", "price"};
  REQUIRE_TORCH_ERROR(rules.resolve(header, "s.csv"), "'price' is listed as both a sparse and a dense field");
  rules.sparse = {"user", "buy"};
  REQUIRE_TORCH_ERROR(rules.resolve(header, "s.csv"), "'buy' is listed as a feature but it is a label column");
}

// Rows to be scored carry no labels: a layout without label columns reads them as 0.
TEST_CASE("CSV reader reads rows without labels") {
  ScratchDir tmp("unlabelled");
  const auto path = tmp.write("score.csv", "user,item,price\n5,7,0.5\n6,8,1\n");
  auto layout = tiny_layout();
  layout.click.clear(), layout.conversion.clear();
  std::vector<ParsedRow> rows;
  read_csv(path, layout, [&](const ParsedRow& r) { rows.push_back(r); });
  REQUIRE(rows.size() == 2);
  REQUIRE(rows[1].sparse == std::vector<int64_t>{6, 8});
  REQUIRE(rows[1].click == 0.f);
}

namespace {
const char kF = '\x01', kId = '\x02', kVal = '\x03';
std::string feature(const std::string& field, int64_t id, double value) {
  return field + kId + std::to_string(id) + kVal + std::to_string(value);
}
}  // namespace

// The raw release's skeleton joins its common features by md5; fields and values land in the Ali-CCP layout.
TEST_CASE("raw Ali-CCP reader joins skeleton and common features") {
  ScratchDir tmp("raw");
  const std::string common = std::string("aaa,3,") + feature("101", 11, 1.0) + kF + feature("109_14", 500, 0.25) + kF +
                             feature("109_14", 501, 0.9) + "\n" + "bbb,1," + feature("101", 12, 1.0) + "\n";
  const std::string skeleton = std::string("1,1,0,aaa,2,") + feature("205", 77, 1.0) + kF + feature("508", 9, 0.75) +
                               "\n" + "2,1,1,bbb,2," + feature("205", 78, 1.0) + kF + feature("999", 1, 1.0) + "\n" +
                               "3,0,0,aaa,1," + feature("205", 77, 1.0) + "\n";
  const auto common_path = tmp.write("common_features_train.csv", common);
  const auto skeleton_path = tmp.write("sample_skeleton_train.csv", skeleton);
  std::vector<ParsedRow> rows;
  aliccp_raw_source(skeleton_path, common_path)([&](const ParsedRow& r) { rows.push_back(r); });
  REQUIRE(rows.size() == 3);
  const auto layout = CsvLayout::aliccp();
  auto col = [&](const std::string& name) {
    return std::find(layout.sparse.begin(), layout.sparse.end(), name) - layout.sparse.begin();
  };
  REQUIRE(rows[0].sparse[col("101")] == 11);
  REQUIRE(rows[0].sparse[col("205")] == 77);
  REQUIRE(rows[0].sparse[col("109_14")] == 500);  // the first feature of a multi-valued field
  REQUIRE(rows[0].dense[0] == 0.25f);             // D109_14
  REQUIRE(rows[0].dense[4] == 0.75f);             // D508
  REQUIRE(rows[0].sparse[col("206")] == 0);       // absent field
  REQUIRE(rows[1].sparse[col("101")] == 12);
  REQUIRE(rows[1].conversion == 1.f);
  REQUIRE(rows[2].click == 0.f);

  // Without the test pair, validation and test are shares of the training rows (one row each here).
  auto splits = load_aliccp_raw_splits(skeleton_path, common_path, "", "", {1, 8, 0.58, 0.1});
  REQUIRE(splits.train.num_rows() == 1);
  REQUIRE(splits.valid.num_rows() == 1);
  REQUIRE(splits.test.num_rows() == 1);
  REQUIRE(splits.schema.num_sparse() == 23);

  const auto bad_key = tmp.write("s2.csv", std::string("1,1,0,zzz,1,") + feature("205", 1, 1.0) + "\n");
  REQUIRE_TORCH_ERROR(aliccp_raw_source(bad_key, common_path)([](const ParsedRow&) {}),
                      "s2.csv:1: common-feature key 'zzz' is not in");
  const auto bad_feature = tmp.write("s3.csv", "1,1,0,aaa,1,205:77\n");
  REQUIRE_TORCH_ERROR(aliccp_raw_source(bad_feature, common_path)([](const ParsedRow&) {}),
                      "s3.csv:1, column 'features': expected features as field 0x02 id 0x03 value");
  const auto bad_label = tmp.write("s4.csv", std::string("1,0,1,aaa,1,") + feature("205", 1, 1.0) + "\n");
  REQUIRE_TORCH_ERROR(aliccp_raw_source(bad_label, common_path)([](const ParsedRow&) {}), "buy is 1 but click is 0");
}

// Each malformed raw line is refused with the file, line and field; a BOM and CRLF are accepted.
TEST_CASE("raw Ali-CCP reader refuses bad input with its place") {
  ScratchDir tmp("raw_bad");
  const auto common_path = tmp.write("common.csv",
                                     "\xEF\xBB\xBF"
                                     "aaa,1," +
                                         feature("101", 11, 1.0) + "\r\n");
  auto rows_of = [&](const std::string& skeleton) {
    int64_t rows = 0;
    aliccp_raw_source(tmp.write("s.csv", skeleton), common_path)([&](const ParsedRow&) { ++rows; });
    return rows;
  };
  REQUIRE(rows_of("1,1,0,aaa,1," + feature("205", 7, 1.0) + "\r\n") == 1);  // BOM'd common key joins
  auto refused = [&](const std::string& skeleton, const std::string& expected) {
    INFO("skeleton: " << skeleton);
    REQUIRE_TORCH_ERROR(rows_of(skeleton), expected);
  };
  const auto f205 = feature("205", 7, 1.0);
  refused("1,1,0\n", "s.csv:1: expected sample_id,click,buy,md5,feature_count,features, got '1,1,0'");
  refused("1,2,0,aaa,1," + f205 + "\n", "s.csv:1, column 'click': expected a 0/1 label, got '2'");
  refused("1,1,0,aaa,x," + f205 + "\n", "s.csv:1, column 'feature_count': expected a feature count, got 'x'");
  refused("1,1,0,aaa,1," + feature("205", -3, 1.0) + "\n",
          "s.csv:1, column 'features': expected an integer id >= 0, got -3");
  refused("1,1,0,aaa,1,205" + std::string(1, kId) + "7" + kVal + "nan\n",
          "column 'features': expected a finite number, got 'nan'");
  refused("1,1,0,aaa,1,205" + std::string(1, kId) + "7\n", "expected features as field 0x02 id 0x03 value");
  // The last line cut short: inside a feature, and between features.
  refused("1,1,0,aaa,1," + f205 + "\n2,1,0,aaa,2," + f205 + kF + "508" + kId + "9",
          "s.csv:2, column 'features': expected features as field 0x02 id 0x03 value, got '508");
  refused("1,1,0,aaa,1," + f205 + "\n2,1,0,aaa,2," + f205 + kF,
          "s.csv:2, column 'features': the line announces 2 features but holds 1");
  refused("1,1,0,aaa,3," + f205 + "\n", "the line announces 3 features but holds 1 (a line cut short?)");
  refused(std::string(10'000'000, 'x') + "\n",
          "s.csv:1: expected sample_id,click,buy,md5,feature_count,features, got 'xxxx");
  refused("1,1,0,bbb,1," + f205 + "\n", "s.csv:1: common-feature key 'bbb' is not in");
  const auto bad_common = tmp.write("c2.csv", "aaa\n");
  REQUIRE_TORCH_ERROR(aliccp_raw_source(tmp.write("s.csv", "1,1,0,aaa,0,\n"), bad_common)([](const ParsedRow&) {}),
                      "c2.csv:1: expected md5,feature_count,features, got 'aaa'");
  // An empty skeleton reads as no rows; encoding refuses an empty training split.
  REQUIRE(rows_of("") == 0);
  REQUIRE_TORCH_ERROR(load_aliccp_raw_splits(tmp / "s.csv", common_path, "", ""), "the training split holds no rows");
}

// The cache returns what was encoded; a second load skips encoding; a damaged file is a miss.
TEST_CASE("binary cache round trip, hit and miss") {
  ScratchDir tmp("cache");
  const std::string h = kTinyHeader;
  const auto train =
      tmp.write("train.csv", h + "0,0,50,7,0.5,u\n1,1,30,8,0.25,u\n0,0,30,9,1,u\n1,0,10,7,2,u\n0,0,10,7,3,u\n");
  const auto cache_dir = (tmp.path / "cache").string();
  auto fresh = load_csv_splits({train, "", ""}, tiny_layout(), {1, 8, 0.2, 0.3});
  int encodes = 0;
  auto encode = [&] {
    ++encodes;
    return load_csv_splits({train, "", ""}, tiny_layout(), {1, 8, 0.2, 0.3});
  };
  auto first = mtl::data::detail::cached({train}, "opts", cache_dir, "tiny", encode);
  auto second = mtl::data::detail::cached({train}, "opts", cache_dir, "tiny", encode);
  REQUIRE(encodes == 1);
  for (const auto* s : {&first, &second}) {
    REQUIRE(s->train.ids == fresh.train.ids);
    REQUIRE(s->train.dense == fresh.train.dense);
    REQUIRE(s->valid.click == fresh.valid.click);
    REQUIRE(s->vocabularies[0].ids() == fresh.vocabularies[0].ids());
    REQUIRE(s->schema.sparse_fields()[1].vocab_size == fresh.schema.sparse_fields()[1].vocab_size);
    REQUIRE(s->schema.dense_fields()[0].name == "price");
  }
  // Other options, another key: encoded again.
  mtl::data::detail::cached({train}, "other opts", cache_dir, "tiny", encode);
  REQUIRE(encodes == 2);
  // A truncated cache file is a miss, not a crash.
  for (const auto& entry : fs::directory_iterator(cache_dir))
    fs::resize_file(entry.path(), fs::file_size(entry.path()) / 2);
  mtl::data::detail::cached({train}, "opts", cache_dir, "tiny", encode);
  REQUIRE(encodes == 3);
  // A cache that cannot be stored (here its folder lies below a file) only costs the parse.
  const auto below_file = tmp.write("plain", "x") + "/cache";
  auto uncached = mtl::data::detail::cached({train}, "opts", below_file, "tiny", encode);
  REQUIRE(encodes == 4);
  REQUIRE(uncached.train.ids == fresh.train.ids);
}

// Seeded shuffles: every row once per epoch, the same order for the same seed, resumable by position.
TEST_CASE("BatchLoader order, epochs, seek and prefetch") {
  auto ds = SyntheticGenerator(SyntheticOptions().num_users(500).num_items(500)).generate(Split::train, 40);
  auto first_ids = [](const TrainingBatch& b) {
    std::vector<int64_t> v;
    for (int64_t i = 0; i < b.size(); ++i)
      v.push_back(b.features.sparse_ids[i][0].item<int64_t>() * 1000 + b.features.sparse_ids[i][9].item<int64_t>());
    return v;
  };
  BatchLoader a(ds, LoaderOptions().batch_size(8).seed(3)), b(ds, LoaderOptions().batch_size(8).seed(3).prefetch(0));
  REQUIRE(a.batches_per_epoch() == 5);
  std::vector<std::vector<int64_t>> seen;
  std::multiset<float> dense_seen;
  for (int i = 0; i < 10; ++i) {
    auto x = a.next(), y = b.next();
    REQUIRE(torch::equal(x.features.sparse_ids, y.features.sparse_ids));
    REQUIRE(x.size() == 8);
    seen.push_back(first_ids(x));
    if (i < 5)
      for (int64_t r = 0; r < 8; ++r) dense_seen.insert(x.features.dense[r][2].item<float>());
  }
  REQUIRE(a.position() == LoaderPosition{2, 0});
  // The first epoch holds every row once.
  std::multiset<float> all;
  for (int64_t r = 0; r < 40; ++r) all.insert(ds.dense[r * 8 + 2]);
  REQUIRE(dense_seen == all);
  REQUIRE(seen[0] != seen[5]);  // another epoch, another order
  // Seeking replays from that position.
  a.seek({1, 2});
  REQUIRE(first_ids(a.next()) == seen[7]);
  BatchLoader other_seed(ds, LoaderOptions().batch_size(8).seed(4));
  REQUIRE(first_ids(other_seed.next()) != seen[0]);
  REQUIRE_TORCH_ERROR(BatchLoader(ds, LoaderOptions().batch_size(64)), "holds 40 rows, fewer than one batch of 64");
}

// Rows generated as batches are drawn: the rows generate() gives, read in index order (each an independent draw),
// one pass per epoch, resumable by position; nothing outside [0, rows) is made.
TEST_CASE("BatchLoader over rows generated on demand") {
  SyntheticGenerator gen(SyntheticOptions().num_users(500).num_items(500));
  const auto ds = gen.generate(Split::train, 40);
  const auto source = gen.rows_on_demand(Split::train, 40);
  REQUIRE(source.independent_rows());
  REQUIRE_FALSE(TrainingRows(ds).independent_rows());
  BatchLoader loader(source, LoaderOptions().batch_size(8).seed(3));
  REQUIRE(loader.batches_per_epoch() == 5);
  for (int i = 0; i < 7; ++i) {
    const auto expected = ds.slice((i % 5) * 8, (i % 5) * 8 + 8);
    const auto got = loader.next();
    REQUIRE(torch::equal(got.features.sparse_ids, expected.features.sparse_ids));
    REQUIRE(torch::equal(got.features.dense, expected.features.dense));
    REQUIRE(torch::equal(got.click, expected.click));
    REQUIRE(torch::equal(got.conversion, expected.conversion));
  }
  loader.seek({3, 4});
  REQUIRE(torch::equal(loader.next().features.sparse_ids, ds.slice(32, 40).features.sparse_ids));
  REQUIRE_TORCH_ERROR(source.batch({40}), "row 40 is outside [0, 40)");
  // Another draw of the training rows (another training seed's): other rows, and the ones generate() gives for it.
  const auto redrawn = gen.generate(Split::train, 40, 0, /*redraw=*/1);
  REQUIRE_FALSE(torch::equal(redrawn.slice(0, 40).features.sparse_ids, ds.slice(0, 40).features.sparse_ids));
  REQUIRE(torch::equal(gen.rows_on_demand(Split::train, 40, 1).batch({0, 1, 2}).features.dense,
                       redrawn.slice(0, 3).features.dense));
}
