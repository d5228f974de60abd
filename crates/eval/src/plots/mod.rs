//! The charts of the reports: a tiny, dependency-free SVG chart writer, and the PNG rendering of
//! its output. This module draws; what a report shows, and where, is `report.rs`'s business.
//!
//! Two chart kinds are supported, both rendered as complete standalone
//! `<svg>` documents of 640×400 user units that can be written to a `.svg`
//! file or inlined into HTML/Markdown:
//!
//! * [`line_chart`]: one polyline per [`Series`] (e.g. loss against step), with
//!   an optional shaded band per series (min–max over seeds or a confidence
//!   interval), linear or logarithmic y axis, and a legend; [`accuracy_chart`] is one whose y
//!   axis spans 0 to 1.
//! * [`bar_chart`]: one bar per variant with a 95 % error bar.
//!
//! Axis ticks come from the classic "nice numbers" scheme ([`nice_ticks`]):
//! the tick step is 1, 2 or 5 times a power of ten, chosen so that about five
//! ticks cover the data, and the axis is widened to the enclosing ticks. Log
//! axes use powers of ten when the data span several decades and 1–2–5 values
//! (or linear nice values) when they do not.
//!
//! Robustness rules: every piece of user text is XML-escaped, non-finite data
//! points are skipped (as are non-positive values on a log axis), and empty or
//! degenerate input still yields a valid document with finite coordinates.
//! Colours follow the Okabe–Ito palette, which stays distinguishable under the
//! common forms of colour blindness.
//!
//! ```text
//! ticks.rs     tick values and labels (pure numbers)
//! axis.rs      Extent and Axis: from data values to a position along an axis
//! canvas.rs    the SVG document: size, palette, plot frame, grid, legend, escaping
//! line.rs      line_chart and its Series
//! bar.rs       bar_chart
//! png.rs       PNG rasterising with resvg, and the fonts it uses
//! ```

/// `write!` into a `String`, which cannot fail.
macro_rules! w {
    ($dst:expr, $($arg:tt)*) => {{
        let _ = write!($dst, $($arg)*);
    }};
}

mod axis;
mod bar;
mod canvas;
mod line;
mod png;
mod ticks;
#[cfg(test)]
mod well_formed;

pub use bar::bar_chart;
pub use line::{Series, accuracy_chart, line_chart};
pub use png::{RenderError, svg_to_png, system_fonts};
pub use ticks::nice_ticks;
