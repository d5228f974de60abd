//! What the reproductions made of one comparison per model width share (mqar-gap,
//! hybrid-ratio, recall-frontier): running the comparison at each width into `width-<w>/`, and
//! the page that joins them (a summary table, the checks, each width's verdicts, the plots and a
//! `results.json` holding every width's results).

use super::gaps::spec;
use super::{Check, Outcome, Size, run_compare};
use crate::compare::{LocalExecutor, Results};
use crate::report::{self, Plot, Section, Table};
use attnlab_train::RunConfig;
use std::path::Path;

/// The arms `(name, mixer)` on `base` at each width (`model.d_model`), one comparison each with
/// its own report in `out/width-<w>/`.
pub(super) fn run_each_width(
    name: &str,
    base: &RunConfig,
    widths: &[usize],
    (seeds, lrs, target): (u64, &[f64], Option<f64>),
    arms: &[(&str, &str)],
    out: &Path,
    exec: &LocalExecutor,
) -> Result<Vec<Results>, String> {
    widths
        .iter()
        .map(|&w| {
            let mut config = base.clone();
            config.model.d_model = w;
            let comparison = spec(&config, seeds, lrs, target, arms)?;
            let dir = out.join(format!("width-{w}"));
            let results = run_compare(&comparison, &format!("attnlab reproduce {name}: width {w}"), &dir, exec)?;
            report::write(&results, &dir)?;
            Ok(results)
        })
        .collect()
}

/// The joined page: `summary` first, then the checks, then each width's verdicts (without the
/// monitoring advice) with a pointer to its full report; `results.json` holds the checks and
/// every width's results.
#[allow(clippy::too_many_arguments)]
pub(super) fn write_joined(
    name: &str,
    size: Size,
    (title, intro): (&str, String),
    widths: &[usize],
    per_width: &[Results],
    (heading, summary): (&str, Table),
    checks: Vec<Check>,
    plots: Vec<Plot>,
    out: &Path,
) -> Result<Outcome, String> {
    let mut sections = vec![Section::new(heading).table(summary), Section::new("Expected effects").bullets(checks.iter().map(Check::line).collect())];
    for (w, r) in widths.iter().zip(per_width) {
        sections.push(
            Section::new(format!("Width {w}"))
                .text(format!("Full report: `width-{w}/report.html`."))
                .bullets(r.verdicts.iter().map(|v| v.split("; After").next().unwrap_or(v).to_string()).collect()),
        );
    }
    let doc = report::Document { title: title.into(), decision: None, intro, sections, plots };
    let json = serde_json::json!({ "reproduction": name, "size": size, "widths": widths, "checks": checks, "per_width": per_width });
    report::write_document(&doc, &serde_json::to_string_pretty(&json).map_err(|e| e.to_string())?, out)?;
    Ok(Outcome { checks, summary: doc.sections[0].table.clone().expect("the summary has a table") })
}
