//! Axes as scales: the [`Extent`] of the values a chart must show, and the [`Axis`] made from it
//! (linear or logarithmic), which places a value along the axis and carries the labelled ticks.

use super::ticks::{format_value, linear_labels, log_ticks, nice_ticks};

/// Running min/max of the values an axis must show.
#[derive(Clone, Copy)]
pub(super) struct Extent {
    min: f64,
    max: f64,
}

impl Default for Extent {
    fn default() -> Self {
        Self { min: f64::INFINITY, max: f64::NEG_INFINITY }
    }
}

impl Extent {
    pub(super) fn add(&mut self, v: f64) {
        self.min = self.min.min(v);
        self.max = self.max.max(v);
    }

    fn is_empty(&self) -> bool {
        self.min > self.max
    }
}

/// A numeric axis: its domain, scale, and labelled ticks.
pub(super) struct Axis {
    pub(super) lo: f64,
    pub(super) hi: f64,
    log: bool,
    pub(super) ticks: Vec<(f64, String)>,
}

impl Axis {
    pub(super) fn linear(extent: Extent) -> Self {
        let (min, max) = if extent.is_empty() { (0.0, 1.0) } else { (extent.min, extent.max) };
        let ticks = nice_ticks(min, max, 5);
        let labels = linear_labels(&ticks);
        Self {
            lo: ticks[0],
            hi: ticks[ticks.len() - 1],
            log: false,
            ticks: ticks.into_iter().zip(labels).collect(),
        }
    }

    /// Log axis over a positive extent.
    pub(super) fn log(extent: Extent) -> Self {
        let (min, max) = if extent.is_empty() { (1.0, 10.0) } else { (extent.min, extent.max) };
        let (lo, hi, ticks) = log_ticks(min, max);
        let ticks = ticks.into_iter().map(|t| (t, format_value(t))).collect();
        Self { lo, hi, log: true, ticks }
    }

    /// Position of `v` along the axis, 0 at `lo` and 1 at `hi`.
    pub(super) fn fraction(&self, v: f64) -> f64 {
        let f = if self.log {
            // Values at or below zero cannot be shown; pin them to the floor.
            let v = if v > 0.0 { v } else { self.lo };
            (v.log10() - self.lo.log10()) / (self.hi.log10() - self.lo.log10())
        } else {
            (v - self.lo) / (self.hi - self.lo)
        };
        if f.is_finite() { f } else { 0.0 }
    }
}
