//! The report directory of a comparison:
//!
//! ```text
//! results.json   every run's final and curve metrics, and the per-arm analysis (machine-readable)
//! report.md      the summary table, verdicts and plots, for reading in a terminal or a forge
//! report.html    the same, self-contained: plots inline as SVG
//! plots/*.svg, plots/*.png   loss, gradient norm, eval metric, attention entropy per layer,
//!                final metric with 95% intervals, steps to target
//! ```
//!
//! Curves are the mean over seeds at each arm's best learning rate, with the min–max over seeds
//! as a band. This file decides what a page holds and writes it out; the charts themselves are
//! drawn, and rasterised to PNG, by `crate::plots`.

use crate::compare::{ArmResult, LayerCurve, Results, RunRecord};
use crate::plots::{RenderError, Series, bar_chart, line_chart, svg_to_png, system_fonts};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// Why a report could not be written.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("cannot write {path}: {reason}")]
    Write { path: PathBuf, reason: std::io::Error },
    #[error("cannot render {stem}.png: {reason}")]
    Render { stem: String, reason: RenderError },
    #[error("cannot write results.json: {0}")]
    Json(serde_json::Error),
}

/// A mean curve `(x, y)` and its band `(x, min, max)`.
pub type MeanBand = (Vec<(f64, f64)>, Vec<(f64, f64, f64)>);

/// Mean over curves at the steps all of them have, with the min and max as a band.
pub fn mean_band(curves: &[&[(usize, f64)]]) -> MeanBand {
    let Some(first) = curves.first() else { return (Vec::new(), Vec::new()) };
    let mut mean = Vec::new();
    let mut band = Vec::new();
    for &(step, _) in first.iter() {
        let values: Vec<f64> =
            curves.iter().filter_map(|c| c.iter().find(|p| p.0 == step).map(|p| p.1)).collect();
        if values.len() != curves.len() || values.iter().any(|v| !v.is_finite()) {
            continue;
        }
        let m = values.iter().sum::<f64>() / values.len() as f64;
        let (lo, hi) =
            values.iter().fold((f64::MAX, f64::MIN), |(lo, hi), &v| (lo.min(v), hi.max(v)));
        mean.push((step as f64, m));
        band.push((step as f64, lo, hi));
    }
    (mean, band)
}

fn arm_series(
    results: &Results,
    arm: &ArmResult,
    curve: impl Fn(&RunRecord) -> &[(usize, f64)],
) -> Series {
    let curves: Vec<&[(usize, f64)]> = arm
        .runs
        .iter()
        .map(|&i| &results.runs[i])
        .filter(|r| r.error.is_none())
        .map(&curve)
        .collect();
    let (mean, band) = mean_band(&curves);
    Series::new(format!("{} (lr {:e})", arm.name, arm.best_lr), mean).with_band(band)
}

/// The plots of a report, as `(file stem, title, SVG)`.
pub fn plots(results: &Results) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    let series = |f: &dyn Fn(&RunRecord) -> &[(usize, f64)]| -> Vec<Series> {
        results.arms.iter().map(|a| arm_series(results, a, f)).collect()
    };
    let loss = series(&|r| &r.loss);
    out.push((
        "loss".into(),
        "Training loss".into(),
        line_chart("Training loss (mean over seeds, band = min–max)", "step", "loss", &loss, false),
    ));
    let grad = series(&|r| &r.grad_norm);
    out.push((
        "grad_norm".into(),
        "Gradient norm".into(),
        line_chart("Gradient norm before clipping", "step", "global grad norm", &grad, true),
    ));
    let metric = series(&|r| &r.eval_metric);
    let title = format!("Eval {}", results.metric);
    out.push((
        "eval_metric".into(),
        title.clone(),
        line_chart(&title, "step", &results.metric, &metric, false),
    ));

    // One series per arm and layer of a per-layer curve (entropy, sink mass).
    let per_layer = |layers_of: &dyn Fn(&ArmResult) -> usize,
                     curve: &dyn Fn(&RunRecord) -> &LayerCurve|
     -> Vec<Series> {
        let mut all = Vec::new();
        for arm in &results.arms {
            for layer in 0..layers_of(arm) {
                let curves: Vec<Vec<(usize, f64)>> = arm
                    .runs
                    .iter()
                    .map(|&i| &results.runs[i])
                    .filter(|r| r.error.is_none())
                    .map(|r| {
                        curve(r)
                            .iter()
                            .filter_map(|(s, e)| e.get(layer).map(|v| (*s, *v)))
                            .collect()
                    })
                    .collect();
                let refs: Vec<&[(usize, f64)]> = curves.iter().map(|c| c.as_slice()).collect();
                let (mean, band) = mean_band(&refs);
                all.push(Series::new(format!("{} layer {layer}", arm.name), mean).with_band(band));
            }
        }
        all
    };
    let entropy = per_layer(&|a| a.entropy_range_per_layer.len(), &|r| &r.entropy);
    out.push((
        "entropy".into(),
        "Attention entropy per layer".into(),
        line_chart(
            "Attention entropy per layer (1 = uniform, 0 = one-hot)",
            "step",
            "normalised entropy",
            &entropy,
            false,
        ),
    ));
    let sink = per_layer(&|a| a.sink_mass_range_per_layer.len(), &|r| &r.sink_mass);
    if !sink.is_empty() {
        out.push((
            "sink_mass".into(),
            "Sink mass per layer".into(),
            line_chart(
                "Sink mass per layer (mean attention weight on position 0)",
                "step",
                "weight on position 0",
                &sink,
                false,
            ),
        ));
    }

    let arms: Vec<(String, Vec<usize>)> =
        results.arms.iter().map(|a| (a.name.clone(), a.runs.clone())).collect();
    let by_length = length_series(&results.metric, &arms, &results.runs);
    if !by_length.is_empty() {
        // Short: a longer title runs off the plot's edges.
        let title = format!("Final {} vs evaluation length", results.metric);
        out.push((
            "metric_vs_length".into(),
            title.clone(),
            line_chart(&title, "evaluation length (tokens)", &results.metric, &by_length, false),
        ));
    }

    let bars: Vec<(String, f64, f64, f64)> = results
        .arms
        .iter()
        .map(|a| (a.name.clone(), a.summary.mean, a.summary.ci_low, a.summary.ci_high))
        .collect();
    let title = format!("Final {} (mean, 95% CI over seeds)", results.metric);
    out.push(("final_metric".into(), title.clone(), bar_chart(&title, &results.metric, &bars)));

    if let Some(target) = results.target {
        let bars: Vec<(String, f64, f64, f64)> = results
            .arms
            .iter()
            .map(|a| {
                let reached: Vec<f64> =
                    a.steps_to_target.iter().flatten().map(|&s| s as f64).collect();
                let lo = reached.iter().copied().fold(f64::NAN, f64::min);
                let hi = reached.iter().copied().fold(f64::NAN, f64::max);
                (a.name.clone(), a.median_steps_to_target.unwrap_or(f64::NAN), lo, hi)
            })
            .collect();
        let title = format!(
            "Steps to {} {target} (median, range over seeds that reached it)",
            results.metric
        );
        out.push(("steps_to_target".into(), title.clone(), bar_chart(&title, "steps", &bars)));
    }
    out
}

pub fn fmt(v: f64) -> String {
    if v.is_finite() { format!("{v:.4}") } else { "–".into() }
}

/// Summary table rows: the same strings go into report.md and report.html.
pub fn table(results: &Results) -> (Vec<&'static str>, Vec<Vec<String>>) {
    let header = vec![
        "arm",
        "best lr",
        "final metric (mean)",
        "95% CI",
        "Δ vs baseline",
        "Δ 95% CI (Welch)",
        "Δ 95% CI (bootstrap)",
        "verdict",
        "steps to target (median; reached)",
        "tokens/s",
        "parameters",
        "decode state (floats)",
    ];
    let rows = results
        .arms
        .iter()
        .map(|a| {
            let s = &a.summary;
            let reached = a.steps_to_target.iter().filter(|s| s.is_some()).count();
            vec![
                a.name.clone(),
                if a.best_lr.is_finite() { format!("{:e}", a.best_lr) } else { "–".into() },
                if a.no_finite_result { "no finite result".into() } else { fmt(s.mean) },
                format!("[{}, {}] (n = {})", fmt(s.ci_low), fmt(s.ci_high), s.n),
                a.difference
                    .as_ref()
                    .map_or(if a.is_baseline { "baseline" } else { "–" }.into(), |d| fmt(d.mean)),
                a.difference
                    .as_ref()
                    .map_or("–".into(), |d| format!("[{}, {}]", fmt(d.ci_low), fmt(d.ci_high))),
                a.bootstrap.map_or("–".into(), |(lo, hi)| format!("[{}, {}]", fmt(lo), fmt(hi))),
                a.verdict.map_or(if a.is_baseline { "baseline" } else { "–" }.into(), |v| {
                    v.as_str().to_string()
                }),
                if results.target.is_some() {
                    format!(
                        "{}; {reached}/{}",
                        a.median_steps_to_target.map_or("–".into(), |m| format!("{m:.0}")),
                        a.steps_to_target.len()
                    )
                } else {
                    "–".into()
                },
                if a.tokens_per_s.is_finite() {
                    format!("{:.0}", a.tokens_per_s)
                } else {
                    "–".into()
                },
                a.params.to_string(),
                a.state_floats.to_string(),
            ]
        })
        .collect();
    (header, rows)
}

/// A report page: sections of text, tables and bullet lists, then the plots. `compare` and
/// every reproduction render into one, so all reports look alike.
#[derive(Clone, Debug, Default)]
pub struct Document {
    pub title: String,
    /// The one line to act on (a comparison's adopt / do not adopt / inconclusive), shown
    /// first, above the introduction.
    pub decision: Option<String>,
    pub intro: String,
    pub sections: Vec<Section>,
    pub plots: Vec<Plot>,
}

#[derive(Clone, Debug, Default)]
pub struct Section {
    pub heading: String,
    pub paragraphs: Vec<String>,
    pub table: Option<Table>,
    pub bullets: Vec<String>,
}

/// A table; `id` becomes the HTML table's id (the comparison's is `summary`).
#[derive(Clone, Debug, Default)]
pub struct Table {
    pub id: String,
    pub header: Vec<String>,
    pub rows: Vec<Vec<String>>,
}

#[derive(Clone, Debug)]
pub struct Plot {
    /// File stem under `plots/`.
    pub stem: String,
    pub title: String,
    pub svg: String,
}

impl Section {
    pub fn new(heading: impl Into<String>) -> Self {
        Self { heading: heading.into(), ..Default::default() }
    }
    pub fn text(mut self, p: impl Into<String>) -> Self {
        self.paragraphs.push(p.into());
        self
    }
    pub fn table(mut self, t: Table) -> Self {
        self.table = Some(t);
        self
    }
    pub fn bullets(mut self, b: Vec<String>) -> Self {
        self.bullets = b;
        self
    }
}

impl Table {
    pub fn new(id: &str, header: Vec<String>, rows: Vec<Vec<String>>) -> Self {
        Self { id: id.to_string(), header, rows }
    }
}

/// The comparison's page: summary table, verdicts, lr sweep, failed runs, plots.
pub fn document(results: &Results) -> Document {
    let intro = format!(
        "Task `{}`; metric: {} ({} is better); seeds {:?}; baseline `{}`. Each arm is reported at its best learning rate.",
        results.task,
        results.metric,
        if results.higher_is_better { "higher" } else { "lower" },
        results.seeds,
        results.baseline
    );
    let (header, rows) = table(results);
    let mut sections = Vec::new();
    if !results.missing.is_empty() {
        // First, so a partial report is not read as a finished one.
        sections.push(Section::new("Runs not finished").text(format!(
            "{} planned run(s) have not finished (queued, running or interrupted); arms with any get no verdict. Run the \
             comparison's command again to finish them.",
            results.missing.len()
        )).bullets(results.missing.clone()));
    }
    sections.extend([
        Section::new("Summary").table(Table::new(
            "summary",
            header.into_iter().map(String::from).collect(),
            rows,
        )),
        Section::new("Verdicts").bullets(results.verdicts.clone()),
        Section::new(format!("Learning-rate sweep (mean final {} over seeds)", results.metric))
            .bullets(
                results
                    .arms
                    .iter()
                    .map(|a| {
                        let sweep: Vec<String> = a
                            .lr_sweep
                            .iter()
                            .map(|&(lr, m, n)| match n {
                                0 => format!("{lr:e}: no finite result (n = 0)"),
                                _ => format!("{lr:e}: {} (n = {n})", fmt(m)),
                            })
                            .collect();
                        format!("{}: {}", a.name, sweep.join("; "))
                    })
                    .collect(),
            ),
    ]);
    let failed: Vec<String> = results
        .runs
        .iter()
        .filter(|r| r.error.is_some())
        .map(|r| {
            format!("{} lr {:e} seed {}: {}", r.arm, r.lr, r.seed, r.error.as_deref().unwrap_or(""))
        })
        .collect();
    if !failed.is_empty() {
        sections.push(Section::new("Failed runs").bullets(failed));
    }
    let plots =
        plots(results).into_iter().map(|(stem, title, svg)| Plot { stem, title, svg }).collect();
    Document {
        title: results.title.clone(),
        decision: Some(results.decision.clone()).filter(|d| !d.is_empty()),
        intro,
        sections,
        plots,
    }
}

fn markdown(doc: &Document) -> String {
    let mut md = String::new();
    let _ = writeln!(md, "# {}\n", doc.title);
    if let Some(d) = &doc.decision {
        let _ = writeln!(md, "**Decision:** {d}\n");
    }
    let _ = writeln!(md, "{}\n", doc.intro);
    for s in &doc.sections {
        let _ = writeln!(md, "## {}\n", s.heading);
        for p in &s.paragraphs {
            let _ = writeln!(md, "{p}\n");
        }
        if let Some(t) = &s.table {
            let _ = writeln!(md, "| {} |", t.header.join(" | "));
            let _ = writeln!(md, "|{}", "---|".repeat(t.header.len()));
            for row in &t.rows {
                let _ = writeln!(md, "| {} |", row.join(" | "));
            }
            md.push('\n');
        }
        for b in &s.bullets {
            let _ = writeln!(md, "- {b}");
        }
        if !s.bullets.is_empty() {
            md.push('\n');
        }
    }
    let _ = writeln!(md, "## Plots\n");
    for p in &doc.plots {
        let _ = writeln!(md, "![{}](plots/{}.svg)", p.title, p.stem);
    }
    md
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// Markdown-style `code` spans become <code> in HTML.
fn inline(s: &str) -> String {
    let mut out = String::new();
    for (i, part) in escape(s).split('`').enumerate() {
        if i % 2 == 1 {
            let _ = write!(out, "<code>{part}</code>");
        } else {
            out.push_str(part);
        }
    }
    out
}

fn html(doc: &Document) -> String {
    let mut h = String::new();
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{}</title>\n<style>\
         body{{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}}\
         table{{border-collapse:collapse;font-size:0.9em}}td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}}\
         td:first-child{{text-align:left}}figure{{display:inline-block;margin:0.5em}}</style></head><body>\n",
        escape(&doc.title)
    );
    let _ = writeln!(h, "<h1>{}</h1>", escape(&doc.title));
    if let Some(d) = &doc.decision {
        let _ = writeln!(h, "<p id=\"decision\"><strong>Decision:</strong> {}</p>", inline(d));
    }
    let _ = writeln!(h, "<p>{}</p>", inline(&doc.intro));
    for s in &doc.sections {
        let _ = writeln!(h, "<h2>{}</h2>", escape(&s.heading));
        for p in &s.paragraphs {
            let _ = writeln!(h, "<p>{}</p>", inline(p));
        }
        if let Some(t) = &s.table {
            let _ = write!(h, "<table id=\"{}\"><tr>", escape(&t.id));
            for c in &t.header {
                let _ = write!(h, "<th>{}</th>", escape(c));
            }
            h.push_str("</tr>\n");
            for row in &t.rows {
                h.push_str("<tr>");
                for c in row {
                    let _ = write!(h, "<td>{}</td>", escape(c));
                }
                h.push_str("</tr>\n");
            }
            h.push_str("</table>\n");
        }
        if !s.bullets.is_empty() {
            h.push_str("<ul>\n");
            for b in &s.bullets {
                let _ = writeln!(h, "<li>{}</li>", inline(b));
            }
            h.push_str("</ul>\n");
        }
    }
    h.push_str("<h2>Plots</h2>\n");
    for p in &doc.plots {
        // Inline SVG: drop the XML declaration, if any, so the page stays one document.
        let body = p.svg.trim_start_matches(|c| c != '<').trim_start();
        let body = if body.starts_with("<?xml") {
            body.split_once("?>").map_or(body, |(_, b)| b.trim_start())
        } else {
            body
        };
        let _ = writeln!(h, "<figure>{body}<figcaption>{}</figcaption></figure>", escape(&p.title));
    }
    h.push_str("</body></html>\n");
    h
}

/// Writes a comparison's report into `dir`: results.json, report.md, report.html, plots/.
pub fn write(results: &Results, dir: &Path) -> Result<(), ReportError> {
    let json = serde_json::to_string_pretty(results).map_err(ReportError::Json)?;
    write_document(&document(results), &json, dir)
}

/// Writes `results.json` (the given JSON), `report.md`, `report.html` and every plot as SVG and
/// PNG into `dir`. Everything is written into a staging directory first and then moved in,
/// `results.json` last: a report is complete once its `results.json` exists, and an interrupted
/// write leaves the old report's other files or none, never half of a new one.
pub fn write_document(doc: &Document, results_json: &str, dir: &Path) -> Result<(), ReportError> {
    let io = |p: &Path, reason| ReportError::Write { path: p.to_path_buf(), reason };
    let staging = dir.join(format!(".tmp-report-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&staging);
    let plot_dir = staging.join("plots");
    std::fs::create_dir_all(&plot_dir).map_err(|e| io(&plot_dir, e))?;
    let fonts = std::sync::Arc::new(system_fonts());
    for p in &doc.plots {
        let path = plot_dir.join(format!("{}.svg", p.stem));
        std::fs::write(&path, &p.svg).map_err(|e| io(&path, e))?;
        let png = svg_to_png(&p.svg, &fonts)
            .map_err(|reason| ReportError::Render { stem: p.stem.clone(), reason })?;
        let path = plot_dir.join(format!("{}.png", p.stem));
        std::fs::write(&path, png).map_err(|e| io(&path, e))?;
    }
    for (name, text) in [
        ("report.md", markdown(doc)),
        ("report.html", html(doc)),
        ("results.json", results_json.to_string()),
    ] {
        let path = staging.join(name);
        std::fs::write(&path, text).map_err(|e| io(&path, e))?;
    }
    // Publish: the old results.json goes first (the report is now incomplete), then the plots
    // directory (the old one renamed away, then removed), the pages, and results.json last.
    let _ = std::fs::remove_file(dir.join("results.json"));
    let (plots, old_plots) =
        (dir.join("plots"), dir.join(format!(".tmp-old-plots-{}", std::process::id())));
    if plots.exists() {
        std::fs::rename(&plots, &old_plots).map_err(|e| io(&plots, e))?;
    }
    std::fs::rename(&plot_dir, &plots).map_err(|e| io(&plots, e))?;
    let _ = std::fs::remove_dir_all(&old_plots);
    for name in ["report.md", "report.html", "results.json"] {
        std::fs::rename(staging.join(name), dir.join(name)).map_err(|e| io(&dir.join(name), e))?;
    }
    std::fs::remove_dir(&staging).map_err(|e| io(&staging, e))
}

/// Per arm (`(name, its best-lr runs)`), the main metric at each evaluation length its runs
/// report (`<metric>@<length>`, as MQAR's `task.eval_lengths` writes), averaged over the runs;
/// empty when no run has any.
pub fn length_series(
    metric: &str,
    arms: &[(String, Vec<usize>)],
    runs: &[RunRecord],
) -> Vec<Series> {
    let prefix = format!("{metric}@");
    let mut series = Vec::new();
    for (name, arm_runs) in arms {
        let curves: Vec<Vec<(usize, f64)>> = arm_runs
            .iter()
            .map(|&i| &runs[i])
            .filter(|r| r.error.is_none())
            .map(|r| {
                let mut points: Vec<(usize, f64)> = r
                    .final_eval
                    .iter()
                    .filter_map(|(k, v)| {
                        Some((k.strip_prefix(&prefix)?.parse::<usize>().ok()?, *v))
                    })
                    .collect();
                points.sort_by_key(|p| p.0);
                points
            })
            .filter(|c| !c.is_empty())
            .collect();
        if curves.is_empty() {
            continue;
        }
        let refs: Vec<&[(usize, f64)]> = curves.iter().map(|c| c.as_slice()).collect();
        let (mean, band) = mean_band(&refs);
        series.push(Series::new(name.clone(), mean).with_band(band));
    }
    series
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The length plot's points come from `<metric>@<length>` of each arm's best-lr runs, in
    /// length order, averaged over seeds; other metrics are ignored.
    #[test]
    fn length_series_reads_metric_at_length() {
        let run = |a64: f64, a128: f64| RunRecord {
            final_eval: [
                ("accuracy@128", a128),
                ("accuracy@64", a64),
                ("loss@64", 9.0),
                ("accuracy", 1.0),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
            ..Default::default()
        };
        let arms = vec![("a".to_string(), vec![0, 1])];
        let s = length_series("accuracy", &arms, &[run(0.8, 0.4), run(0.6, 0.2)]);
        assert_eq!(s.len(), 1);
        let points: Vec<(f64, f64)> =
            s[0].points.iter().map(|&(x, y)| (x, (y * 1e6).round() / 1e6)).collect();
        assert_eq!(points, vec![(64.0, 0.7), (128.0, 0.3)]);
        assert!(
            length_series("accuracy", &arms, &[RunRecord::default(), RunRecord::default()])
                .is_empty()
        );
    }

    #[test]
    fn mean_band_keeps_common_steps_only() {
        let a = [(1, 1.0), (2, 3.0), (3, 5.0)];
        let b = [(1, 3.0), (2, 5.0)];
        let (mean, band) = mean_band(&[&a, &b]);
        assert_eq!(mean, vec![(1.0, 2.0), (2.0, 4.0)]);
        assert_eq!(band, vec![(1.0, 1.0, 3.0), (2.0, 3.0, 5.0)]);
        assert_eq!(mean_band(&[]).0.len(), 0);
    }
}
