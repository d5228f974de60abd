//! What the training loop prints: a progress bar with loss and ETA on a terminal, plain
//! periodic lines when stdout is a file or a pipe (CI logs, `| tee`), nothing when quiet.

use indicatif::{ProgressBar, ProgressStyle};
use std::collections::BTreeMap;
use std::io::IsTerminal;

/// How much the loop prints.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verbosity {
    /// Nothing (used by `compare`, which prints one line per run).
    Quiet,
    /// A progress bar on a terminal, plain periodic lines otherwise.
    Auto,
    /// Plain periodic lines.
    Lines,
}

pub struct Progress {
    verbosity: Verbosity,
    bar: Option<ProgressBar>,
}

impl Progress {
    pub fn new(verbosity: Verbosity, done: usize, total: usize) -> Self {
        let bar = (verbosity == Verbosity::Auto && std::io::stdout().is_terminal()).then(|| {
            let bar = ProgressBar::new(total as u64);
            bar.set_style(
                ProgressStyle::with_template("{bar:30} {pos}/{len} steps | {msg} | {elapsed_precise} elapsed, ETA {eta_precise}")
                    .expect("valid template"),
            );
            bar.set_position(done as u64);
            bar
        });
        Self { verbosity, bar }
    }

    /// A line that is always shown (unless quiet), above the bar when there is one.
    pub fn line(&self, text: &str) {
        match (&self.bar, self.verbosity) {
            (_, Verbosity::Quiet) => {}
            (Some(bar), _) => bar.println(text),
            (None, _) => println!("{text}"),
        }
    }

    pub fn train(&self, step: usize, loss: f64, lr: f64, grad_norm: f64, tokens_per_s: f64) {
        let text = format!(
            "step {step:>6} | loss {loss:.4} | lr {lr:.2e} | grad norm {grad_norm:.3} | {tokens_per_s:.0} tok/s"
        );
        match &self.bar {
            Some(bar) => {
                bar.set_position(step as u64);
                bar.set_message(format!("loss {loss:.4}"));
            }
            None => self.line(&text),
        }
    }

    pub fn tick(&self, step: usize, loss: f64) {
        if let Some(bar) = &self.bar {
            bar.set_position(step as u64);
            bar.set_message(format!("loss {loss:.4}"));
        }
    }

    pub fn eval(&self, step: usize, name: &str, value: f64, metrics: &BTreeMap<String, f64>) {
        let mut text = format!("eval {step:>6} | {name} {value:.4}");
        for (k, v) in metrics.iter().filter(|(k, _)| k.as_str() != name && !k.contains("_k")) {
            text.push_str(&format!(" | {k} {v:.4}"));
        }
        self.line(&text);
    }

    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

/// A small text chart of `(x, y)` points, `height` rows by up to `width` columns, with the y
/// range on the left: the loss curve printed at the end of a run.
pub fn text_chart(points: &[(usize, f64)], width: usize, height: usize) -> String {
    let points: Vec<(usize, f64)> = points.iter().copied().filter(|(_, y)| y.is_finite()).collect();
    if points.is_empty() || width == 0 || height < 2 {
        return String::new();
    }
    let (lo, hi) =
        points.iter().fold((f64::MAX, f64::MIN), |(lo, hi), &(_, y)| (lo.min(y), hi.max(y)));
    let span = (hi - lo).max(1e-12);
    let columns = width.min(points.len());
    let mut grid = vec![vec![' '; columns]; height];
    // Each column shows the mean of the points that fall in it.
    let column_rows = (0..columns).map(|col| {
        let from = col * points.len() / columns;
        let to = ((col + 1) * points.len() / columns).max(from + 1);
        let mean = points[from..to].iter().map(|p| p.1).sum::<f64>() / (to - from) as f64;
        ((hi - mean) / span * (height - 1) as f64).round() as usize
    });
    for (col, row) in column_rows.enumerate() {
        grid[row.min(height - 1)][col] = '*';
    }
    let mut out = String::new();
    for (r, row) in grid.iter().enumerate() {
        let label = match r {
            0 => format!("{hi:>8.3} |"),
            r if r == height - 1 => format!("{lo:>8.3} |"),
            _ => format!("{:>8} |", ""),
        };
        out.push_str(&label);
        out.extend(row.iter());
        out.push('\n');
    }
    let (first, last) = (points[0].0, points[points.len() - 1].0);
    out.push_str(&format!(
        "{:>8} +{}\n{:>10}step {first} .. {last}\n",
        "",
        "-".repeat(columns),
        ""
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chart_puts_the_maximum_on_top_and_the_minimum_at_the_bottom() {
        let pts: Vec<(usize, f64)> = (0..10).map(|i| (i * 10, 10.0 - i as f64)).collect();
        let chart = text_chart(&pts, 10, 5);
        let rows: Vec<&str> = chart.lines().collect();
        assert!(rows[0].starts_with("  10.000 |*"), "{chart}");
        assert!(rows[4].starts_with("   1.000 |") && rows[4].ends_with('*'), "{chart}");
        assert!(chart.contains("step 0 .. 90"));
    }
}
