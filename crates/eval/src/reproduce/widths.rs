//! What the reproductions made of one comparison per model width share (mqar-gap,
//! hybrid-ratio, recall-frontier): running the comparison at each width into `width-<w>/`, and
//! the page that joins them (a summary table, the checks, each cell's verdicts, the plots and a
//! `results.json` holding every cell's results). A cell is a width, or a width at one of several
//! task sizes (mqar-gap's pair counts, in `pairs-<n>/width-<w>/`).

use super::harness::{Check, Outcome, ReproduceError, Size, run_compare, spec, write_report};
use crate::compare::{ArmResult, LocalExecutor, Results};
use crate::report::{self, Plot, Section, Table};
use attnlab_train::RunConfig;
use std::path::Path;

/// "0.9 by step 450, 2 of 2 seeds" (the median over the seeds that reached `target`), or
/// "never 0.9": where every arm recalls in the end, how soon it does still tells them apart.
pub(super) fn steps_to_target_words(arm: &ArmResult, target: f64) -> String {
    let reached = arm.steps_to_target.iter().flatten().count();
    match arm.median_steps_to_target {
        Some(s) => {
            format!("{target} by step {s:.0}, {reached} of {} seeds", arm.steps_to_target.len())
        }
        None => format!("never {target}"),
    }
}

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
) -> Result<Vec<Results>, ReproduceError> {
    widths
        .iter()
        .map(|&w| {
            let mut config = base.clone();
            config.model.d_model = w;
            let comparison = spec(&config, seeds, lrs, target, arms)?;
            let dir = out.join(format!("width-{w}"));
            let results = run_compare(
                &comparison,
                &format!("attnlab reproduce {name}: width {w}"),
                &dir,
                exec,
            )?;
            report::write(&results, &dir)?;
            Ok(results)
        })
        .collect()
}

/// One comparison of a joined page: its width and, where the page spans task sizes, the number
/// of key-value pairs.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) struct Cell {
    pub width: usize,
    pub pairs: Option<usize>,
}

impl Cell {
    pub fn widths(widths: &[usize]) -> Vec<Cell> {
        widths.iter().map(|&width| Cell { width, pairs: None }).collect()
    }
    /// Where its comparison ran, relative to the page.
    pub fn dir(&self) -> String {
        match self.pairs {
            Some(p) => format!("pairs-{p}/width-{}", self.width),
            None => format!("width-{}", self.width),
        }
    }
    pub fn heading(&self) -> String {
        match self.pairs {
            Some(p) => format!("{p} pairs, width {}", self.width),
            None => format!("Width {}", self.width),
        }
    }
}

/// The joined page: `summary` first, then the checks, then each width's verdicts (without the
/// monitoring advice) with a pointer to its full report; `results.json` holds the checks and
/// every width's results.
#[allow(clippy::too_many_arguments)]
pub(super) fn write_joined(
    name: &str,
    size: Size,
    (title, intro): (&str, String),
    cells: &[Cell],
    per_width: &[Results],
    (heading, summary): (&str, Table),
    checks: Vec<Check>,
    plots: Vec<Plot>,
    out: &Path,
) -> Result<Outcome, ReproduceError> {
    let mut sections = vec![
        Section::new(heading).table(summary),
        Section::new("Expected effects").bullets(checks.iter().map(Check::line).collect()),
    ];
    for (cell, r) in cells.iter().zip(per_width) {
        sections.push(
            Section::new(cell.heading())
                .text(format!("Full report: `{}/report.html`.", cell.dir()))
                .bullets(
                    r.verdicts
                        .iter()
                        .map(|v| v.split("; After").next().unwrap_or(v).to_string())
                        .collect(),
                ),
        );
    }
    let doc = report::Document { title: title.into(), decision: None, intro, sections, plots };
    let widths: Vec<usize> = cells.iter().map(|c| c.width).collect();
    let mut json = serde_json::json!({ "reproduction": name, "size": size, "widths": widths, "checks": checks, "per_width": per_width });
    if cells.iter().any(|c| c.pairs.is_some()) {
        json["num_kv_pairs"] = serde_json::json!(cells.iter().map(|c| c.pairs).collect::<Vec<_>>());
    }
    write_report(&doc, &json, out)?;
    Ok(Outcome { checks, summary: doc.sections[0].table.clone().expect("the summary has a table") })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cell_names_its_directory_and_heading() {
        let plain = Cell::widths(&[16, 32]);
        assert_eq!(
            (plain[1].dir(), plain[1].heading()),
            ("width-32".to_string(), "Width 32".to_string())
        );
        let sized = Cell { width: 64, pairs: Some(8) };
        assert_eq!(
            (sized.dir(), sized.heading()),
            ("pairs-8/width-64".to_string(), "8 pairs, width 64".to_string())
        );
    }
}
