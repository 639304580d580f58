// report.html: one self-contained page (no scripts, no network) with inline
// SVG: validation AUC curves per experiment, final test metrics with 95%
// confidence intervals (DeLong), the loss-term weights of runs that weigh
// their terms, gate-utilisation heatmaps of the gated experiments, and the
// delta table.
#pragma once

#include "report.hpp"

#include <fmt/core.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

namespace chain {

namespace html {

inline std::string escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '&':
        out += "&amp;";
        break;
      case '"':
        out += "&quot;";
        break;
      default:
        out += c;
    }
  }
  return out;
}

inline const char* color(size_t i) {
  static const char* palette[] = {"#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2"};
  return palette[i % 7];
}

struct Series {
  std::string name;
  const char* color;
  std::vector<std::pair<double, double>> points;
};

/// Maps [lo, hi] onto [a, b] (pixels).
struct Scale {
  double lo, hi, a, b;
  double operator()(double v) const { return hi > lo ? a + (v - lo) / (hi - lo) * (b - a) : (a + b) / 2; }
};

inline std::string line_chart(const std::string& title, const std::vector<Series>& series) {
  double x0 = INFINITY, x1 = -INFINITY, y0 = INFINITY, y1 = -INFINITY;
  for (const auto& s : series)
    for (const auto& [x, y] : s.points)
      x0 = std::min(x0, x), x1 = std::max(x1, x), y0 = std::min(y0, y), y1 = std::max(y1, y);
  if (!std::isfinite(x0)) return "<p>" + escape(title) + ": no validation records.</p>";
  const double pad = std::max(1e-3, (y1 - y0) * 0.1);
  y0 -= pad, y1 += pad;
  const int w = 560, h = 300, left = 60, right = 130, top = 30, bottom = 40;
  Scale sx{x0, x1, double(left), double(w - right)}, sy{y0, y1, double(h - bottom), double(top)};
  std::string svg = fmt::format("<svg xmlns='http://www.w3.org/2000/svg' width='{}' height='{}' role='img'>", w, h);
  svg += fmt::format("<text x='{}' y='18' font-size='14' font-weight='bold'>{}</text>", left, escape(title));
  for (int i = 0; i <= 4; ++i) {
    const double v = y0 + (y1 - y0) * i / 4, y = sy(v);
    svg += fmt::format("<line x1='{}' y1='{:.1f}' x2='{}' y2='{:.1f}' stroke='#ddd'/>", left, y, w - right, y);
    svg += fmt::format("<text x='{}' y='{:.1f}' font-size='11' text-anchor='end'>{:.4f}</text>", left - 4, y + 4, v);
  }
  svg += fmt::format(
      "<text x='{}' y='{}' font-size='11'>step {:.0f}</text><text x='{}' y='{}' font-size='11' "
      "text-anchor='end'>{:.0f}</text>",
      left, h - 15, x0, w - right, h - 15, x1);
  int legend = 0;
  for (const auto& s : series) {
    if (s.points.empty()) continue;
    std::string pts;
    for (const auto& [x, y] : s.points) pts += fmt::format("{:.1f},{:.1f} ", sx(x), sy(y));
    svg += fmt::format("<polyline fill='none' stroke='{}' stroke-width='2' points='{}'/>", s.color, pts);
    svg += fmt::format(
        "<rect x='{}' y='{}' width='12' height='12' fill='{}'/><text x='{}' y='{}' font-size='12'>{}</text>",
        w - right + 10, top + legend * 18, s.color, w - right + 28, top + legend * 18 + 11, escape(s.name));
    ++legend;
  }
  return svg + "</svg>";
}

/// One row per experiment: the value and its 95% interval.
/// Rows of (experiment, value, half-width, colour).
inline std::string interval_chart(const std::string& title,
                                  const std::vector<std::tuple<std::string, double, double, const char*>>& rows) {
  if (rows.empty()) return "";
  double lo = INFINITY, hi = -INFINITY;
  for (const auto& [name, v, half, c] : rows) lo = std::min(lo, v - half), hi = std::max(hi, v + half);
  const double pad = std::max(1e-3, (hi - lo) * 0.1);
  const int w = 560, row_h = 24, left = 60, right = 90, top = 30;
  const int h = top + row_h * static_cast<int>(rows.size()) + 20;
  Scale sx{lo - pad, hi + pad, double(left), double(w - right)};
  std::string svg = fmt::format("<svg xmlns='http://www.w3.org/2000/svg' width='{}' height='{}' role='img'>", w, h);
  svg += fmt::format("<text x='{}' y='18' font-size='14' font-weight='bold'>{}</text>", left, escape(title));
  for (size_t i = 0; i < rows.size(); ++i) {
    const auto& [name, v, half, c] = rows[i];
    const double y = top + row_h * (i + 0.5);
    svg += fmt::format("<text x='{}' y='{:.1f}' font-size='12' text-anchor='end'>{}</text>", left - 6, y + 4,
                       escape(name));
    svg += fmt::format("<line x1='{:.1f}' y1='{:.1f}' x2='{:.1f}' y2='{:.1f}' stroke='{}' stroke-width='2'/>",
                       sx(v - half), y, sx(v + half), y, c);
    svg += fmt::format("<circle cx='{:.1f}' cy='{:.1f}' r='4' fill='{}'/>", sx(v), y, c);
    svg += fmt::format("<text x='{}' y='{:.1f}' font-size='11'>{:.4f}</text>", w - right + 6, y + 4, v);
  }
  return svg + "</svg>";
}

/// Mean gate weight per task (rows) and expert (columns), darker = more weight.
inline std::string heatmap(const std::string& title, const std::vector<nlohmann::json>& gates) {
  if (gates.empty()) return "";
  size_t columns = 0;
  for (const auto& g : gates) columns = std::max(columns, g["experts"].size());
  const int cell = 62, left = 120, top = 30, label = 100;
  const int w = left + cell * static_cast<int>(columns) + 60,
            h = top + cell / 2 * static_cast<int>(gates.size()) + label;
  std::string svg = fmt::format("<svg xmlns='http://www.w3.org/2000/svg' width='{}' height='{}' role='img'>", w, h);
  svg += fmt::format("<text x='{}' y='18' font-size='14' font-weight='bold'>{}</text>", 4, escape(title));
  for (size_t t = 0; t < gates.size(); ++t) {
    const auto& g = gates[t];
    const double y = top + t * cell / 2;
    svg += fmt::format("<text x='{}' y='{:.1f}' font-size='12' text-anchor='end'>{} (Gini {:.2f})</text>", left - 4,
                       y + cell / 4 + 4, escape(g["task"].get<std::string>()), g["gini"].get<double>());
    const auto& weights = g["mean_gate_weight"];
    for (size_t e = 0; e < weights.size(); ++e) {
      const double v = weights[e].get<double>();
      const int shade = static_cast<int>(255 - std::min(1.0, v) * 200);
      svg += fmt::format("<rect x='{}' y='{:.1f}' width='{}' height='{}' fill='rgb({},{},255)' stroke='#fff'/>",
                         left + e * cell, y, cell, cell / 2, shade, shade);
      svg += fmt::format("<text x='{}' y='{:.1f}' font-size='11' text-anchor='middle'>{:.2f}</text>",
                         left + e * cell + cell / 2, y + cell / 4 + 4, v);
    }
  }
  // A column's label is its expert's name when every task's gate has the same
  // expert there (shared experts); PLE's private columns differ per task.
  for (size_t e = 0; e < columns; ++e) {
    std::string name;
    for (const auto& g : gates) {
      const auto n = e < g["experts"].size() ? g["experts"][e].get<std::string>() : "";
      name = name.empty() || name == n ? n : "each task's own #" + std::to_string(e);
    }
    const double x = left + e * cell + cell / 2, y = top + gates.size() * cell / 2 + 8;
    svg += fmt::format("<text x='{:.1f}' y='{:.1f}' font-size='10' transform='rotate(40 {:.1f} {:.1f})'>{}</text>", x,
                       y, x, y, escape(name));
  }
  return svg + "</svg>";
}

}  // namespace html

/// report.html, from the chain's runs and the delta analysis the text and JSON were written from.
inline void write_report_html(const std::string& output, const std::vector<ExperimentRecord>& chain,
                              const DeltaAnalysis& analysis) {
  std::string page =
      "<!DOCTYPE html><html><head><meta charset='utf-8'><title>Interview chain report</title><style>"
      "body{font-family:sans-serif;margin:24px;max-width:1200px}table{border-collapse:collapse;margin:8px 0}"
      "td,th{border:1px solid #ccc;padding:4px 8px;font-size:13px;text-align:right}th{background:#f4f4f4}"
      "td.l{text-align:left}.gain{color:#176417}.loss{color:#a11}.charts{display:flex;flex-wrap:wrap;gap:12px}"
      "</style></head><body><h1>Interview chain report</h1>";
  page += "<p>Rebuilt from the run directories named in " + html::escape(output) + "/chain_state.json at " +
          timestamp() +
          ". Test metrics use each run's best checkpoint; intervals are AUC &plusmn; 1.96 DeLong standard errors.</p>";

  page += "<h2>Status</h2><table><tr><th>experiment</th><th>description</th><th>status</th><th>best step</th></tr>";
  for (const auto& e : chain) {
    const auto* r = e.first_finished();
    page += fmt::format("<tr><td class='l'>{}</td><td class='l'>{}</td><td class='l'>{}</td><td>{}</td></tr>", e.id,
                        html::escape(e.description), html::escape(r ? "finished" : e.runs.front().status.status),
                        r ? std::to_string(r->best_step) : "");
  }
  page += "</table>";

  page += "<h2>Validation AUC during training</h2><div class='charts'>";
  for (const std::string metric : {"auc_ctr", "auc_cvr", "auc_ctcvr", "auc_cvr_entire_space"}) {
    std::vector<html::Series> series;
    for (size_t i = 0; i < chain.size(); ++i) {
      const auto* r = chain[i].runs.empty() ? nullptr : &chain[i].runs.front();
      html::Series s{chain[i].id, html::color(i), {}};
      if (r)
        for (const auto& rec : r->valid_records)
          if (rec["values"].contains(metric) && !rec["values"][metric].is_null())
            s.points.emplace_back(rec["step"].get<double>(), rec["values"][metric].get<double>());
      series.push_back(s);
    }
    page += html::line_chart(metric + " (validation)", series);
  }
  page += "</div>";

  page += "<h2>Final test metrics, 95% intervals</h2><div class='charts'>";
  for (const std::string metric : {"auc_ctr", "auc_cvr", "auc_ctcvr", "auc_cvr_entire_space"}) {
    std::vector<std::tuple<std::string, double, double, const char*>> rows;
    for (size_t i = 0; i < chain.size(); ++i) {
      const auto& e = chain[i];
      const auto* predictions = e.first_predictions();
      if (!predictions) continue;
      auto s = mtl::metrics::ranked_rows(*predictions, metric);
      if (!s) continue;
      auto se = mtl::metrics::delong_standard_error(s->scores, s->labels);
      auto auc = mtl::metrics::roc_auc(s->scores, s->labels);
      if (se.defined() && auc.defined()) rows.emplace_back(e.id, auc.value, 1.96 * se.value, html::color(i));
    }
    page += html::interval_chart(metric + " (test)", rows);
  }
  page += "</div>";

  bool weighted = false;
  for (const auto& e : chain)
    if (const auto* r = e.first_finished()) weighted = weighted || !r->loss_weights.empty();
  if (weighted) {
    page += "<h2>Loss-term weights during training</h2><div class='charts'>";
    for (const auto& e : chain) {
      const auto* r = e.first_finished();
      if (!r || r->loss_weights.empty()) continue;
      std::vector<html::Series> series;
      for (const auto& [term, points] : r->loss_weights)
        series.push_back({term, html::color(series.size()), points});
      page += html::line_chart(e.id + ": weight of each loss term", series);
    }
    page += "</div>";
  }

  page += "<h2>Gate utilisation (test split, best checkpoint)</h2><div class='charts'>";
  for (const auto& e : chain) {
    const auto* r = e.first_finished();
    if (r && !r->gate_records.empty())
      page += html::heatmap(e.id + ": mean gate weight per task and expert", r->gate_records);
  }
  page += "</div>";

  const auto& rows = analysis.rows;
  page += "<h2>Deltas</h2>";
  for (const auto& line : analysis.method) page += "<p>" + html::escape(line) + "</p>";
  page +=
      "<table><tr><th>question</th><th>kind</th><th>comparison</th><th>metric</th><th>challenger</th>"
      "<th>reference</th><th>diff (mean over seeds)</th><th>95% interval</th><th>p</th><th>p (Holm)</th>"
      "<th>margin</th><th>p (equivalence)</th><th>mde</th><th>verdict</th></tr>";
  for (const auto& d : rows) {
    const auto& c = d.comparison;
    const auto head = fmt::format(
        "<tr><td class='l'>{}</td><td class='l'>{}</td><td class='l'>{} vs {}</td><td "
        "class='l'>{}</td>",
        c.question, c.primary ? "primary" : "exploratory", c.challenger, c.reference, c.metric);
    if (!d.available) {
      page += head + fmt::format("<td colspan='10' class='l'>not available: {}</td></tr>", html::escape(d.why_not));
      continue;
    }
    const char* cls = d.verdict == "gain" ? "gain" : d.verdict == "loss" ? "loss" : "";
    const auto number = [](double v, int digits) {
      return std::isnan(v) ? std::string() : fmt::format("{:.{}f}", v, digits);
    };
    const auto interval =
        d.test.defined() ? fmt::format("[{:+.5f}, {:+.5f}]", d.test.interval_low, d.test.interval_high) : "";
    page += head + fmt::format(
                       "<td>{:.5f}</td><td>{:.5f}</td><td>{:+.5f}</td><td>{}</td><td>p{}</td><td>{}</td><td>{}</td>"
                       "<td>{}</td><td>{}</td><td class='l {}'>{}</td></tr>",
                       d.value_a, d.value_b, d.test.mean, interval, html::escape(format_p(d.test.p_value)),
                       c.primary ? "p" + html::escape(format_p(d.p_adjusted)) : "", number(d.margin, 4),
                       d.test.defined() ? "p" + html::escape(format_p(d.equivalence_p)) : "", number(d.mde, 5), cls,
                       html::escape(d.verdict));
  }
  page += "</table>";
  const auto designed = designed_vs_found(rows, chain);
  if (!designed.empty()) {
    const auto& scenario = *analysis.scenario;
    page += "<h2>Designed vs found</h2><p>The synthetic data (" + html::escape(scenario) +
            " scenario) plants one mechanism per question; the designed answer is what the primary comparison should "
            "find.";
    if (scenario == "designed") page += " The answers are " + designed_answers_budget();
    page +=
        "</p><table><tr><th>question</th><th>mechanism</th><th>knob</th><th>why</th><th>primary "
        "comparison</th><th>designed</th><th>found</th><th></th></tr>";
    for (const auto& d : designed) {
      const auto& m = designed_mechanism(d.question);
      page += fmt::format(
          "<tr><td class='l'>{}</td><td class='l'>{}</td><td class='l'>{} = {}</td><td class='l'>{}</td><td "
          "class='l'>{}</td><td class='l'>{}</td><td class='l'>{}</td><td class='l {}'>{}</td></tr>",
          d.question, html::escape(m.mechanism), d.knob, html::escape(d.knob_value), html::escape(m.why),
          html::escape(d.comparison), d.designed, d.found,
          !d.why_not_found.empty() ? ""
          : d.as_designed          ? "gain"
                                   : "loss",
          html::escape(d.outcome()));
    }
    page += "</table>";
  }
  if (any_uptake(chain)) {
    page += "<h2>Mechanisms learned</h2><p>" + html::escape(kUptakeHeading) + " (" + kUptakeLegend +
            ").</p><table><tr><th>experiment</th>";
    for (const auto& name : kDesignedTermNames) page += std::string("<th>") + name.head + " " + name.term + "</th>";
    page += "</tr>";
    for (const auto& e : chain) {
      if (e.uptake.empty()) continue;
      page += "<tr><td class='l'>" + e.id + "</td>";
      for (const auto& name : kDesignedTermNames) {
        const auto t = uptake_of(e, name);
        page += t ? fmt::format("<td>{:.3f}</td>", t->slope) : std::string("<td></td>");
      }
      page += "</tr>";
    }
    page += "</table>";
  }
  if (analysis.aligner) page += "<h2>The aligner's claim</h2><p>" + html::escape(*analysis.aligner) + "</p>";
  page += "<h2>Declared choices</h2><ul>";
  for (const auto& line : analysis.choices) page += "<li>" + html::escape(line) + "</li>";
  page += "</ul>";
  const auto& notes = analysis.notes;
  if (!notes.empty()) {
    page += "<h2>Notes</h2><ul>";
    for (const auto& note : notes) page += "<li>" + html::escape(note) + "</li>";
    page += "</ul>";
  }
  page += "</body></html>\n";
  mtl::io::atomic_write((fs::path(output) / "report.html").string(), page);
}

}  // namespace chain
