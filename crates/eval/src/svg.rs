//! A tiny, dependency-free SVG chart writer for evaluation reports.
//!
//! Two chart kinds are supported, both rendered as complete standalone
//! `<svg>` documents of 640×400 user units that can be written to a `.svg`
//! file or inlined into HTML/Markdown:
//!
//! * [`line_chart`]: one polyline per [`Series`] (e.g. loss against step), with
//!   an optional shaded band per series (min–max over seeds or a confidence
//!   interval), linear or logarithmic y axis, and a legend.
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

use std::fmt::Write as _;

/// `write!` into a `String`, which cannot fail.
macro_rules! w {
    ($dst:expr, $($arg:tt)*) => {{
        let _ = write!($dst, $($arg)*);
    }};
}

/// One line of a [`line_chart`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Series {
    /// Legend text.
    pub label: String,
    /// `(x, y)` points, drawn in the given order.
    pub points: Vec<(f64, f64)>,
    /// Optional shaded band as `(x, low, high)` samples, e.g. the min–max over
    /// seeds or a confidence interval.
    pub band: Option<Vec<(f64, f64, f64)>>,
}

impl Series {
    /// A series without a band.
    pub fn new(label: impl Into<String>, points: Vec<(f64, f64)>) -> Self {
        Self {
            label: label.into(),
            points,
            band: None,
        }
    }

    /// Adds a shaded `(x, low, high)` band.
    pub fn with_band(mut self, band: Vec<(f64, f64, f64)>) -> Self {
        self.band = Some(band);
        self
    }
}

/// Renders a line chart as a standalone SVG document.
///
/// Each series gets a colour from a fixed colour-blind-safe palette (cycling
/// after eight). With `log_y`, points with `y <= 0` are skipped and band edges
/// at or below zero are clamped to the bottom of the plot.
pub fn line_chart(
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[Series],
    log_y: bool,
) -> String {
    let y_ok = |y: f64| y.is_finite() && (!log_y || y > 0.0);

    let mut xs = Extent::default();
    let mut ys = Extent::default();
    for s in series {
        for &(x, y) in &s.points {
            if x.is_finite() && y_ok(y) {
                xs.add(x);
                ys.add(y);
            }
        }
        for &(x, lo, hi) in s.band.iter().flatten() {
            if x.is_finite() && lo.is_finite() && hi.is_finite() {
                xs.add(x);
                // Band edges count only where the axis can show them.
                for y in [lo, hi] {
                    if y_ok(y) {
                        ys.add(y);
                    }
                }
            }
        }
    }
    let x_axis = Axis::linear(xs);
    let y_axis = if log_y {
        Axis::log(ys)
    } else {
        Axis::linear(ys)
    };
    let frame = Frame::default();

    let mut out = String::new();
    open_document(&mut out, title);
    draw_y_axis(&mut out, &frame, &y_axis, y_label);
    draw_x_ticks(&mut out, &frame, &x_axis);
    draw_x_label(&mut out, &frame, x_label);

    // Bands first so that every line stays visible on top of every band.
    for (i, s) in series.iter().enumerate() {
        let Some(band) = &s.band else { continue };
        let band: Vec<_> = band
            .iter()
            .filter(|(x, lo, hi)| x.is_finite() && lo.is_finite() && hi.is_finite())
            .collect();
        if band.is_empty() {
            continue;
        }
        let upper = band
            .iter()
            .map(|&&(x, _, hi)| (frame.x(&x_axis, x), frame.y(&y_axis, hi)));
        let lower = band
            .iter()
            .rev()
            .map(|&&(x, lo, _)| (frame.x(&x_axis, x), frame.y(&y_axis, lo)));
        let points = point_list(upper.chain(lower));
        w!(
            out,
            "<polygon points=\"{points}\" fill=\"{}\" fill-opacity=\"0.2\" stroke=\"none\"/>\n",
            colour(i)
        );
    }

    let mut plotted = 0;
    for (i, s) in series.iter().enumerate() {
        let pts: Vec<(f64, f64)> = s
            .points
            .iter()
            .filter(|&&(x, y)| x.is_finite() && y_ok(y))
            .map(|&(x, y)| (frame.x(&x_axis, x), frame.y(&y_axis, y)))
            .collect();
        plotted += pts.len();
        match pts.as_slice() {
            [] => {}
            // A one-point polyline is invisible; mark it instead.
            [(x, y)] => w!(
                out,
                "<circle cx=\"{}\" cy=\"{}\" r=\"3.5\" fill=\"{}\"><title>{}</title></circle>\n",
                num(*x),
                num(*y),
                colour(i),
                escape(&s.label)
            ),
            _ => w!(
                out,
                "<polyline points=\"{}\" fill=\"none\" stroke=\"{}\" stroke-width=\"2\" \
                 stroke-linejoin=\"round\" stroke-linecap=\"round\"><title>{}</title></polyline>\n",
                point_list(pts.iter().copied()),
                colour(i),
                escape(&s.label)
            ),
        }
    }
    if plotted == 0 {
        no_data(&mut out, &frame);
    }

    draw_axis_lines(&mut out, &frame);
    draw_legend(&mut out, &frame, series.iter().map(|s| s.label.as_str()));
    out.push_str("</svg>\n");
    out
}

/// Renders a bar chart with 95 % error bars as a standalone SVG document.
///
/// `bars` holds `(label, value, ci_low, ci_high)`. Bars are anchored at zero;
/// a bar with a non-finite value keeps its slot and label but is not drawn,
/// and an error bar is drawn only when both interval ends are finite.
pub fn bar_chart(title: &str, y_label: &str, bars: &[(String, f64, f64, f64)]) -> String {
    let mut ys = Extent::default();
    for &(_, value, lo, hi) in bars {
        if value.is_finite() {
            // Bars grow from zero, so zero must be on the axis.
            ys.add(0.0);
            ys.add(value);
            if lo.is_finite() && hi.is_finite() {
                ys.add(lo);
                ys.add(hi);
            }
        }
    }
    let y_axis = Axis::linear(ys);
    let frame = Frame::default();

    let mut out = String::new();
    open_document(&mut out, title);
    draw_y_axis(&mut out, &frame, &y_axis, y_label);

    let slot = (frame.right - frame.left) / bars.len().max(1) as f64;
    let zero = frame.y(&y_axis, 0.0_f64.clamp(y_axis.lo, y_axis.hi));
    let mut drawn = 0;
    for (i, (label, value, lo, hi)) in bars.iter().enumerate() {
        let centre = frame.left + slot * (i as f64 + 0.5);
        w!(
            out,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{}</text>\n",
            num(centre),
            num(frame.bottom + 18.0),
            escape(label)
        );
        if !value.is_finite() {
            continue;
        }
        drawn += 1;
        let top = frame.y(&y_axis, *value);
        let width = slot * 0.6;
        w!(
            out,
            "<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"{}\" fill-opacity=\"0.85\">\
             <title>{}: {}</title></rect>\n",
            num(centre - width / 2.0),
            num(top.min(zero)),
            num(width),
            num((top - zero).abs()),
            colour(i),
            escape(label),
            format_value(*value)
        );
        if lo.is_finite() && hi.is_finite() {
            let (y_lo, y_hi) = (frame.y(&y_axis, *lo), frame.y(&y_axis, *hi));
            let cap = (width * 0.25).min(8.0);
            w!(
                out,
                "<path d=\"M{c},{lo} V{hi} M{l},{lo} H{r} M{l},{hi} H{r}\" stroke=\"#222\" \
                 stroke-width=\"1.5\" fill=\"none\"/>\n",
                c = num(centre),
                lo = num(y_lo),
                hi = num(y_hi),
                l = num(centre - cap),
                r = num(centre + cap)
            );
        }
    }
    if drawn == 0 {
        no_data(&mut out, &frame);
    }
    if y_axis.lo < 0.0 && y_axis.hi > 0.0 {
        w!(
            out,
            "<line x1=\"{}\" y1=\"{z}\" x2=\"{}\" y2=\"{z}\" stroke=\"#555\" stroke-width=\"1\"/>\n",
            num(frame.left),
            num(frame.right),
            z = num(zero)
        );
    }
    draw_axis_lines(&mut out, &frame);
    out.push_str("</svg>\n");
    out
}

/// "Nice" tick values covering `[lo, hi]` with roughly `target` ticks.
///
/// The step is 1, 2 or 5 times a power of ten and the first and last ticks
/// enclose the range, e.g. `nice_ticks(0.0, 1.0, 5)` gives
/// `[0.0, 0.2, 0.4, 0.6, 0.8, 1.0]`. Degenerate ranges are widened around
/// their value and non-finite bounds fall back to `[0, 1]`; at least two ticks
/// are always returned.
pub fn nice_ticks(lo: f64, hi: f64, target: usize) -> Vec<f64> {
    let (lo, hi) = widen(lo, hi);
    let target = target.max(2);
    let range = nice_number(hi - lo, false);
    let (mantissa, exp) = nice_step(range / (target - 1) as f64);
    let step = tick_value(1, mantissa, exp);
    // The small slack keeps floating-point noise (0.30000000000000004 / 0.1)
    // from adding an empty tick at either end.
    let first = (lo / step + 1e-9).floor() as i64;
    let last = ((hi / step - 1e-9).ceil() as i64).max(first + 1);
    (first..=last)
        .map(|k| tick_value(k, mantissa, exp))
        .collect()
}

// ---------------------------------------------------------------------------
// Layout and drawing helpers
// ---------------------------------------------------------------------------

const WIDTH: f64 = 640.0;
const HEIGHT: f64 = 400.0;

/// Okabe–Ito colours; yellow comes last because it is faint on white.
const PALETTE: [&str; 8] = [
    "#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#000000", "#F0E442",
];

fn colour(i: usize) -> &'static str {
    PALETTE[i % PALETTE.len()]
}

/// The plot area inside the document, in SVG user units.
struct Frame {
    left: f64,
    right: f64,
    top: f64,
    bottom: f64,
}

impl Default for Frame {
    fn default() -> Self {
        Self {
            left: 72.0,
            right: WIDTH - 20.0,
            top: 40.0,
            bottom: HEIGHT - 52.0,
        }
    }
}

impl Frame {
    fn x(&self, axis: &Axis, v: f64) -> f64 {
        self.left + axis.fraction(v) * (self.right - self.left)
    }

    fn y(&self, axis: &Axis, v: f64) -> f64 {
        self.bottom - axis.fraction(v) * (self.bottom - self.top)
    }
}

/// Running min/max of the values an axis must show.
#[derive(Clone, Copy)]
struct Extent {
    min: f64,
    max: f64,
}

impl Default for Extent {
    fn default() -> Self {
        Self {
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
        }
    }
}

impl Extent {
    fn add(&mut self, v: f64) {
        self.min = self.min.min(v);
        self.max = self.max.max(v);
    }

    fn is_empty(&self) -> bool {
        self.min > self.max
    }
}

/// A numeric axis: its domain, scale, and labelled ticks.
struct Axis {
    lo: f64,
    hi: f64,
    log: bool,
    ticks: Vec<(f64, String)>,
}

impl Axis {
    fn linear(extent: Extent) -> Self {
        let (min, max) = if extent.is_empty() {
            (0.0, 1.0)
        } else {
            (extent.min, extent.max)
        };
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
    fn log(extent: Extent) -> Self {
        let (min, max) = if extent.is_empty() {
            (1.0, 10.0)
        } else {
            (extent.min, extent.max)
        };
        let (lo, hi, ticks) = log_ticks(min, max);
        let ticks = ticks.into_iter().map(|t| (t, format_value(t))).collect();
        Self {
            lo,
            hi,
            log: true,
            ticks,
        }
    }

    /// Position of `v` along the axis, 0 at `lo` and 1 at `hi`.
    fn fraction(&self, v: f64) -> f64 {
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

/// Domain and ticks for a log axis covering `[min, max]`, both positive.
fn log_ticks(min: f64, max: f64) -> (f64, f64, Vec<f64>) {
    let mut lo_e = min.log10().floor() as i32;
    let mut hi_e = max.log10().ceil() as i32;
    if hi_e <= lo_e {
        // An exact power of ten: look one decade either side of it.
        lo_e -= 1;
        hi_e = lo_e + 2;
    }
    let decades = hi_e - lo_e;
    if decades >= 3 {
        // Label at most ~9 decades, and stretch the top so that the last
        // label sits on the frame rather than leaving an unlabelled stretch.
        let stride = (decades + 7) / 8;
        let hi_e = lo_e + (decades + stride - 1) / stride * stride;
        let ticks = (lo_e..=hi_e).step_by(stride as usize).map(pow10).collect();
        return (pow10(lo_e), pow10(hi_e), ticks);
    }
    // One or two decades: 1–2–5 values read better than two bare powers.
    let mut candidates: Vec<f64> = (lo_e..hi_e)
        .flat_map(|e| [1, 2, 5].map(|m| tick_value(m, 1, e)))
        .collect();
    candidates.push(pow10(hi_e));
    let lo = candidates
        .iter()
        .copied()
        .filter(|&c| c <= min)
        .fold(pow10(lo_e), f64::max);
    let hi = candidates
        .iter()
        .copied()
        .filter(|&c| c >= max)
        .fold(pow10(hi_e), f64::min);
    let ticks: Vec<f64> = candidates
        .into_iter()
        .filter(|&c| c >= lo && c <= hi)
        .collect();
    if ticks.len() >= 3 {
        return (lo, hi, ticks);
    }
    // Data within a narrow band (say 2.1–3.5): linear nice values instead.
    let ticks: Vec<f64> = nice_ticks(min, max, 5)
        .into_iter()
        .filter(|&t| t > 0.0)
        .collect();
    let lo = ticks[0].min(min);
    let hi = ticks[ticks.len() - 1].max(max);
    (lo, hi, ticks)
}

fn open_document(out: &mut String, title: &str) {
    w!(
        out,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{HEIGHT}\" \
         viewBox=\"0 0 {WIDTH} {HEIGHT}\" font-family=\"Helvetica, Arial, sans-serif\" \
         font-size=\"12\">\n<title>{t}</title>\n\
         <rect width=\"{WIDTH}\" height=\"{HEIGHT}\" fill=\"white\"/>\n\
         <text x=\"{}\" y=\"24\" text-anchor=\"middle\" font-size=\"15\" \
         font-weight=\"bold\">{t}</text>\n",
        WIDTH / 2.0,
        t = escape(title)
    );
}

/// Horizontal grid lines, y tick labels and the rotated y-axis title.
fn draw_y_axis(out: &mut String, frame: &Frame, axis: &Axis, label: &str) {
    for (v, text) in &axis.ticks {
        let y = num(frame.y(axis, *v));
        w!(
            out,
            "<line x1=\"{}\" y1=\"{y}\" x2=\"{}\" y2=\"{y}\" stroke=\"#e4e4e4\"/>\n\
             <text x=\"{}\" y=\"{y}\" dy=\"0.35em\" text-anchor=\"end\">{}</text>\n",
            num(frame.left),
            num(frame.right),
            num(frame.left - 6.0),
            escape(text)
        );
    }
    let (x, y) = (18.0, (frame.top + frame.bottom) / 2.0);
    w!(
        out,
        "<text x=\"{x}\" y=\"{}\" text-anchor=\"middle\" transform=\"rotate(-90 {x} {})\">{}</text>\n",
        num(y),
        num(y),
        escape(label)
    );
}

/// Vertical grid lines and x tick labels.
fn draw_x_ticks(out: &mut String, frame: &Frame, axis: &Axis) {
    for (v, text) in &axis.ticks {
        let x = num(frame.x(axis, *v));
        w!(
            out,
            "<line x1=\"{x}\" y1=\"{}\" x2=\"{x}\" y2=\"{}\" stroke=\"#e4e4e4\"/>\n\
             <text x=\"{x}\" y=\"{}\" text-anchor=\"middle\">{}</text>\n",
            num(frame.top),
            num(frame.bottom),
            num(frame.bottom + 18.0),
            escape(text)
        );
    }
}

fn draw_x_label(out: &mut String, frame: &Frame, label: &str) {
    w!(
        out,
        "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{}</text>\n",
        num((frame.left + frame.right) / 2.0),
        num(HEIGHT - 12.0),
        escape(label)
    );
}

fn draw_axis_lines(out: &mut String, frame: &Frame) {
    w!(
        out,
        "<path d=\"M{l},{t} V{b} H{r}\" stroke=\"#333\" stroke-width=\"1\" fill=\"none\"/>\n",
        l = num(frame.left),
        t = num(frame.top),
        b = num(frame.bottom),
        r = num(frame.right)
    );
}

/// Legend box in the top-right corner of the plot area.
fn draw_legend<'a>(out: &mut String, frame: &Frame, labels: impl Iterator<Item = &'a str>) {
    let labels: Vec<&str> = labels.collect();
    if labels.is_empty() {
        return;
    }
    const ROW: f64 = 16.0;
    // No font metrics available; ~7 units per character is close for 12px text.
    let longest = labels.iter().map(|l| l.chars().count()).max().unwrap_or(0);
    let width = 36.0 + 7.0 * longest as f64;
    let height = 8.0 + ROW * labels.len() as f64;
    let (x, y) = (frame.right - width - 8.0, frame.top + 8.0);
    w!(
        out,
        "<g class=\"legend\">\n<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"white\" \
         fill-opacity=\"0.85\" stroke=\"#ccc\"/>\n",
        num(x),
        num(y),
        num(width),
        num(height)
    );
    for (i, label) in labels.iter().enumerate() {
        let row_y = y + 4.0 + ROW * (i as f64 + 0.5);
        w!(
            out,
            "<line x1=\"{}\" y1=\"{ry}\" x2=\"{}\" y2=\"{ry}\" stroke=\"{}\" stroke-width=\"3\"/>\n\
             <text x=\"{}\" y=\"{ry}\" dy=\"0.35em\">{}</text>\n",
            num(x + 6.0),
            num(x + 26.0),
            colour(i),
            num(x + 32.0),
            escape(label),
            ry = num(row_y)
        );
    }
    out.push_str("</g>\n");
}

fn no_data(out: &mut String, frame: &Frame) {
    w!(
        out,
        "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\" fill=\"#888\">no data</text>\n",
        num((frame.left + frame.right) / 2.0),
        num((frame.top + frame.bottom) / 2.0)
    );
}

fn point_list(points: impl Iterator<Item = (f64, f64)>) -> String {
    let mut s = String::new();
    for (i, (x, y)) in points.enumerate() {
        if i > 0 {
            s.push(' ');
        }
        w!(s, "{},{}", num(x), num(y));
    }
    s
}

/// A coordinate with two decimals; non-finite values (which layout should
/// never produce) become 0 rather than poisoning the document.
fn num(v: f64) -> String {
    let v = if v.is_finite() { v } else { 0.0 };
    let s = format!("{v:.2}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" { "0".into() } else { s.into() }
}

/// Escapes text for XML content and attributes, replacing control characters
/// that XML 1.0 forbids outright.
fn escape(text: &str) -> String {
    let mut s = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => s.push_str("&amp;"),
            '<' => s.push_str("&lt;"),
            '>' => s.push_str("&gt;"),
            '"' => s.push_str("&quot;"),
            '\'' => s.push_str("&apos;"),
            '\t' | '\n' | '\r' => s.push(c),
            c if c.is_control() => s.push('\u{FFFD}'),
            c => s.push(c),
        }
    }
    s
}

// ---------------------------------------------------------------------------
// Numbers
// ---------------------------------------------------------------------------

/// Makes `[lo, hi]` finite, ordered and of non-zero width.
fn widen(lo: f64, hi: f64) -> (f64, f64) {
    if !lo.is_finite() || !hi.is_finite() {
        return (0.0, 1.0);
    }
    let (lo, hi) = if lo <= hi { (lo, hi) } else { (hi, lo) };
    let scale = lo.abs().max(hi.abs());
    if hi - lo > 1e-9 * scale && hi - lo < f64::MAX / 4.0 {
        return (lo, hi);
    }
    // A single value: pad by 10 % of its magnitude (or ±1 around zero).
    let mid = 0.5 * (lo + hi);
    let pad = if mid == 0.0 { 1.0 } else { 0.1 * mid.abs() };
    (mid - pad, mid + pad)
}

/// Heckbert's nice number: 1, 2, 5 or 10 times a power of ten near `x`,
/// rounded to nearest (`round`) or up (for ranges).
fn nice_number(x: f64, round: bool) -> f64 {
    let exp = x.log10().floor() as i32;
    let f = x / pow10(exp);
    let nf = match (round, f) {
        (true, f) if f < 1.5 => 1.0,
        (true, f) if f < 3.0 => 2.0,
        (true, f) if f < 7.0 => 5.0,
        (false, f) if f <= 1.0 => 1.0,
        (false, f) if f <= 2.0 => 2.0,
        (false, f) if f <= 5.0 => 5.0,
        _ => 10.0,
    };
    nf * pow10(exp)
}

/// Rounded nice step as `(mantissa, exponent)` with mantissa 1, 2 or 5, so
/// ticks can be built from integers without accumulating error.
fn nice_step(x: f64) -> (i64, i32) {
    let exp = x.log10().floor() as i32;
    match x / pow10(exp) {
        f if f < 1.5 => (1, exp),
        f if f < 3.0 => (2, exp),
        f if f < 7.0 => (5, exp),
        _ => (1, exp + 1),
    }
}

/// `k · mantissa · 10^exp`, dividing for negative exponents so that values
/// like 0.6 come out correctly rounded (3·2/10, not 3·0.2).
fn tick_value(k: i64, mantissa: i64, exp: i32) -> f64 {
    let n = (k * mantissa) as f64;
    if exp >= 0 {
        n * pow10(exp)
    } else {
        n / pow10(-exp)
    }
}

fn pow10(exp: i32) -> f64 {
    if exp >= 0 {
        10f64.powi(exp)
    } else {
        1.0 / 10f64.powi(-exp)
    }
}

/// Labels for evenly spaced ticks, all with the step's number of decimals.
fn linear_labels(ticks: &[f64]) -> Vec<String> {
    let step = (ticks[1] - ticks[0]).abs();
    let biggest = ticks.iter().fold(0.0_f64, |m, t| m.max(t.abs()));
    let step_exp = step.log10().floor() as i32;
    if biggest >= 1e6 || step_exp < -4 {
        return ticks.iter().map(|&t| format_value(t)).collect();
    }
    let decimals = (-step_exp).max(0) as usize;
    ticks
        .iter()
        .map(|&t| {
            let s = format!("{:.*}", decimals, t);
            // Avoid "-0" / "-0.0" for ticks that are zero up to rounding.
            if s.trim_start_matches('-')
                .chars()
                .all(|c| c == '0' || c == '.')
            {
                s.trim_start_matches('-').to_string()
            } else {
                s
            }
        })
        .collect()
}

/// Shortest readable form of a single value: plain decimals in
/// `[1e-3, 1e6)`, scientific notation outside.
fn format_value(v: f64) -> String {
    if v == 0.0 {
        return "0".into();
    }
    if !v.is_finite() {
        return "n/a".into();
    }
    let a = v.abs();
    if !(1e-3..1e6).contains(&a) {
        // `{:e}` prints 1e-4 / 2.5e6; trim float noise first.
        return format!("{:e}", round_sig(v, 6));
    }
    for decimals in 0..=6 {
        let s = format!("{:.*}", decimals, v);
        if let Ok(back) = s.parse::<f64>()
            && (back - v).abs() <= 1e-9 * a
        {
            return s;
        }
    }
    format!("{v:.6}")
}

fn round_sig(v: f64, digits: i32) -> f64 {
    let exp = v.abs().log10().floor() as i32;
    let scale = pow10(digits - 1 - exp);
    (v * scale).round() / scale
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Minimal XML well-formedness check: one root element, balanced and
    /// properly nested tags, quoted unique attributes, only the five
    /// predefined entities or character references, and no raw `<` or `&`
    /// in text or attribute values.
    fn check_well_formed(doc: &str) -> Result<(), String> {
        let b = doc.as_bytes();
        let mut i = 0;
        let mut stack: Vec<&str> = Vec::new();
        let mut roots = 0;
        let is_name = |c: u8| c.is_ascii_alphanumeric() || matches!(c, b'_' | b':' | b'-' | b'.');
        let check_text = |text: &str| -> Result<(), String> {
            let mut rest = text;
            while let Some(p) = rest.find('&') {
                let after = &rest[p + 1..];
                let end = after.find(';').ok_or("unterminated entity")?;
                let ent = &after[..end];
                let ok = matches!(ent, "amp" | "lt" | "gt" | "quot" | "apos")
                    || ent
                        .strip_prefix('#')
                        .is_some_and(|d| !d.is_empty() && d.chars().all(|c| c.is_ascii_digit()));
                if !ok {
                    return Err(format!("bad entity &{ent};"));
                }
                rest = &after[end + 1..];
            }
            if text.contains('<') {
                return Err("raw '<'".into());
            }
            Ok(())
        };
        while i < b.len() {
            if b[i] != b'<' {
                let end = doc[i..].find('<').map_or(b.len(), |p| i + p);
                let text = &doc[i..end];
                if stack.is_empty() && !text.trim().is_empty() {
                    return Err(format!("text outside root: {text:?}"));
                }
                check_text(text)?;
                i = end;
                continue;
            }
            if doc[i..].starts_with("<!--") {
                i += doc[i..].find("-->").ok_or("unterminated comment")? + 3;
                continue;
            }
            let closing = b.get(i + 1) == Some(&b'/');
            i += if closing { 2 } else { 1 };
            let start = i;
            while i < b.len() && is_name(b[i]) {
                i += 1;
            }
            let name = &doc[start..i];
            if name.is_empty() {
                return Err(format!("empty tag name at {start}"));
            }
            if closing {
                if b.get(i) != Some(&b'>') {
                    return Err(format!("junk in </{name}"));
                }
                i += 1;
                if stack.pop() != Some(name) {
                    return Err(format!("mismatched </{name}>"));
                }
                continue;
            }
            if stack.is_empty() {
                roots += 1;
            }
            let mut attrs: Vec<&str> = Vec::new();
            loop {
                while i < b.len() && b[i].is_ascii_whitespace() {
                    i += 1;
                }
                match b.get(i) {
                    None => return Err("unterminated tag".into()),
                    Some(b'>') => {
                        i += 1;
                        stack.push(name);
                        break;
                    }
                    Some(b'/') if b.get(i + 1) == Some(&b'>') => {
                        i += 2;
                        break;
                    }
                    Some(_) => {
                        let a = i;
                        while i < b.len() && is_name(b[i]) {
                            i += 1;
                        }
                        let attr = &doc[a..i];
                        if attr.is_empty() || b.get(i) != Some(&b'=') {
                            return Err(format!("bad attribute in <{name}> at {a}"));
                        }
                        if attrs.contains(&attr) {
                            return Err(format!("duplicate attribute {attr}"));
                        }
                        attrs.push(attr);
                        let quote = *b.get(i + 1).ok_or("eof")?;
                        if quote != b'"' && quote != b'\'' {
                            return Err(format!("unquoted attribute {attr}"));
                        }
                        let v0 = i + 2;
                        let len = doc[v0..]
                            .find(quote as char)
                            .ok_or("unterminated attribute")?;
                        check_text(&doc[v0..v0 + len])?;
                        i = v0 + len + 1;
                    }
                }
            }
        }
        if !stack.is_empty() {
            return Err(format!("unclosed tags {stack:?}"));
        }
        if roots != 1 {
            return Err(format!("{roots} root elements"));
        }
        Ok(())
    }

    #[track_caller]
    fn assert_valid(doc: &str) {
        if let Err(e) = check_well_formed(doc) {
            panic!("not well-formed: {e}\n{doc}");
        }
        assert!(doc.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""));
        assert!(!doc.contains("NaN"), "NaN in output:\n{doc}");
        assert!(!doc.contains("inf"), "inf in output:\n{doc}");
    }

    #[test]
    fn checker_rejects_malformed_documents() {
        assert!(check_well_formed("<a><b></a></b>").is_err());
        assert!(check_well_formed("<a x=1/>").is_err());
        assert!(check_well_formed("<a>x & y</a>").is_err());
        assert!(check_well_formed("<a>x < y</a>").is_err());
        assert!(check_well_formed("<a x=\"<\"/>").is_err());
        assert!(check_well_formed("<a/><b/>").is_err());
        assert!(check_well_formed("<a x=\"1\" x=\"2\"/>").is_err());
        assert!(check_well_formed("<a>").is_err());
        assert!(check_well_formed("<a x='1'>&amp;&#38;<!-- c --><b/></a>").is_ok());
    }

    fn approx_eq(a: &[f64], b: &[f64]) -> bool {
        a.len() == b.len() && a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-12)
    }

    #[test]
    fn nice_ticks_unit_range() {
        let t = nice_ticks(0.0, 1.0, 5);
        assert!(approx_eq(&t, &[0.0, 0.2, 0.4, 0.6, 0.8, 1.0]), "{t:?}");
        // Built from integers, so exactly the literals.
        assert_eq!(t, vec![0.0, 0.2, 0.4, 0.6, 0.8, 1.0]);
    }

    #[test]
    fn nice_ticks_other_ranges() {
        assert_eq!(
            nice_ticks(0.0, 100.0, 5),
            vec![0.0, 20.0, 40.0, 60.0, 80.0, 100.0]
        );
        assert_eq!(nice_ticks(3.2, 7.9, 5), vec![3.0, 4.0, 5.0, 6.0, 7.0, 8.0]);
        assert_eq!(nice_ticks(-1.0, 1.0, 5), vec![-1.0, -0.5, 0.0, 0.5, 1.0]);
        assert_eq!(nice_ticks(2.1, 3.5, 5), vec![2.0, 2.5, 3.0, 3.5]);
        assert_eq!(
            nice_ticks(0.0, 1000.0, 5),
            vec![0.0, 200.0, 400.0, 600.0, 800.0, 1000.0]
        );
        // Reversed, degenerate and non-finite input.
        assert_eq!(nice_ticks(1.0, 0.0, 5), nice_ticks(0.0, 1.0, 5));
        let single = nice_ticks(5.0, 5.0, 5);
        assert!(single.len() >= 2 && single[0] < 5.0 && *single.last().unwrap() > 5.0);
        let zero = nice_ticks(0.0, 0.0, 5);
        assert!(zero[0] <= -1.0 && *zero.last().unwrap() >= 1.0);
        assert_eq!(nice_ticks(f64::NAN, 1.0, 5), nice_ticks(0.0, 1.0, 5));
        // Ticks always enclose the range with a 1/2/5 step.
        for (lo, hi) in [
            (0.013, 0.0171),
            (-37.0, 912.0),
            (1e-7, 3e-7),
            (12345.0, 12399.0),
        ] {
            let t = nice_ticks(lo, hi, 5);
            assert!(t[0] <= lo && *t.last().unwrap() >= hi, "{lo}..{hi}: {t:?}");
            assert!((3..=11).contains(&t.len()), "{lo}..{hi}: {t:?}");
            let step = t[1] - t[0];
            let mant = step / pow10(step.log10().floor() as i32);
            assert!(
                [1.0, 2.0, 5.0].iter().any(|m| (mant - m).abs() < 1e-6),
                "{step}"
            );
        }
    }

    #[test]
    fn linear_labels_are_tidy() {
        assert_eq!(
            linear_labels(&nice_ticks(0.0, 1.0, 5)),
            ["0.0", "0.2", "0.4", "0.6", "0.8", "1.0"]
        );
        assert_eq!(
            linear_labels(&nice_ticks(-1.0, 1.0, 5)),
            ["-1.0", "-0.5", "0.0", "0.5", "1.0"]
        );
        assert_eq!(linear_labels(&[0.0, 500.0, 1000.0]), ["0", "500", "1000"]);
        assert_eq!(linear_labels(&[0.0, 2e6, 4e6]), ["0", "2e6", "4e6"]);
        assert_eq!(format_value(0.0001), "1e-4");
        assert_eq!(format_value(0.05), "0.05");
        assert_eq!(format_value(2.5), "2.5");
    }

    /// True if `v` is 1, 2 or 5 times a power of ten.
    fn is_one_two_five(v: f64) -> bool {
        let mant = v / pow10(v.log10().floor() as i32);
        [1.0, 2.0, 5.0, 10.0]
            .iter()
            .any(|m| (mant - m).abs() < 1e-9)
    }

    fn is_power_of_ten(v: f64) -> bool {
        (v.log10() - v.log10().round()).abs() < 1e-12
    }

    #[test]
    fn log_ticks_are_powers_of_ten_or_nice() {
        // Many decades: powers of ten only, domain on decade boundaries.
        let (lo, hi, t) = log_ticks(3e-4, 42.0);
        assert!(t.iter().all(|&v| is_power_of_ten(v)), "{t:?}");
        assert!(lo <= 3e-4 && hi >= 42.0 && is_power_of_ten(lo) && is_power_of_ten(hi));
        let (lo, hi, wide) = log_ticks(1e-12, 3e11);
        assert!(
            wide.len() <= 9 && wide.iter().all(|&v| is_power_of_ten(v)),
            "{wide:?}"
        );
        // The domain starts and ends on a labelled tick.
        assert_eq!((lo, hi), (wide[0], wide[wide.len() - 1]));
        assert!(lo <= 1e-12 && hi >= 3e11);

        // A decade or two: 1–2–5 values.
        let (lo, hi, t) = log_ticks(1.5, 40.0);
        assert_eq!((lo, hi), (1.0, 50.0));
        assert!(
            t.len() >= 3 && t.iter().all(|&v| is_one_two_five(v)),
            "{t:?}"
        );

        // Narrow band: linear nice values, evenly spaced with a 1/2/5 step.
        let (lo, hi, t) = log_ticks(2.1, 3.5);
        assert!(lo <= 2.1 && hi >= 3.5 && lo > 0.0);
        assert!(t.len() >= 3, "{t:?}");
        let step = t[1] - t[0];
        assert!(is_one_two_five(step), "{t:?}");
        for w in t.windows(2) {
            assert!((w[1] - w[0] - step).abs() < 1e-9, "{t:?}");
        }

        // A single value (even an exact power of ten) gets padded around it.
        for v in [100.0, 7.0, 3e-5] {
            let (lo, hi, t) = log_ticks(v, v);
            assert!(0.0 < lo && lo < v && v < hi, "{v}: {lo}..{hi}");
            assert!(
                t.len() >= 2 && t.iter().all(|&x| x >= lo && x <= hi),
                "{v}: {t:?}"
            );
        }
    }

    fn sample_series() -> Vec<Series> {
        let steps = (0..50).map(|i| i as f64 * 100.0);
        vec![
            Series::new(
                "softmax <baseline> & \"friends\"",
                steps
                    .clone()
                    .map(|s| (s, 5.0 * (-s / 2000.0).exp() + 1.0))
                    .collect(),
            )
            .with_band(
                steps
                    .clone()
                    .map(|s| {
                        let y = 5.0 * (-s / 2000.0).exp() + 1.0;
                        (s, y * 0.9, y * 1.1)
                    })
                    .collect(),
            ),
            Series::new(
                "linear'attn",
                steps
                    .map(|s| (s, 4.0 * (-s / 1500.0).exp() + 1.2))
                    .chain([(f64::NAN, 1.0), (5000.0, f64::INFINITY)])
                    .collect(),
            ),
        ]
    }

    #[test]
    fn line_chart_is_well_formed_and_labelled() {
        for log_y in [false, true] {
            let svg = line_chart(
                "Loss & <perplexity>",
                "step",
                "loss",
                &sample_series(),
                log_y,
            );
            assert_valid(&svg);
            assert!(svg.contains("softmax &lt;baseline&gt; &amp; &quot;friends&quot;"));
            assert!(svg.contains("linear&apos;attn"));
            assert!(svg.contains("Loss &amp; &lt;perplexity&gt;"));
            assert_eq!(svg.matches("<polyline").count(), 2);
            assert_eq!(svg.matches("<polygon").count(), 1);
            assert!(svg.contains(PALETTE[0]) && svg.contains(PALETTE[1]));
        }
    }

    #[test]
    fn line_chart_coordinates_stay_in_the_plot() {
        let svg = line_chart("t", "x", "y", &sample_series(), false);
        let frame = Frame::default();
        for poly in svg.split("<polyline points=\"").skip(1) {
            let pts = &poly[..poly.find('"').unwrap()];
            for pair in pts.split(' ') {
                let (x, y) = pair.split_once(',').unwrap();
                let (x, y): (f64, f64) = (x.parse().unwrap(), y.parse().unwrap());
                assert!(x >= frame.left - 1e-9 && x <= frame.right + 1e-9, "{x}");
                assert!(y >= frame.top - 1e-9 && y <= frame.bottom + 1e-9, "{y}");
            }
        }
    }

    #[test]
    fn line_chart_degenerate_inputs() {
        // No series at all.
        let svg = line_chart("", "", "", &[], false);
        assert_valid(&svg);
        assert!(svg.contains("no data"));
        assert_valid(&line_chart("", "", "", &[], true));

        // A series with nothing finite, and one with an empty band.
        let junk = [
            Series::new(
                "nan only",
                vec![(f64::NAN, f64::NAN), (1.0, f64::NEG_INFINITY)],
            ),
            Series::new("empty band", vec![]).with_band(vec![]),
        ];
        for log_y in [false, true] {
            let svg = line_chart("junk", "x", "y", &junk, log_y);
            assert_valid(&svg);
            assert!(svg.contains("nan only") && svg.contains("empty band"));
        }

        // A single point: drawn as a marker, axes padded around it.
        let one = [Series::new("one", vec![(3.0, 7.0)])];
        for log_y in [false, true] {
            let svg = line_chart("single", "x", "y", &one, log_y);
            assert_valid(&svg);
            assert!(svg.contains("<circle"));
        }

        // Zero and negative values on a log axis are skipped or clamped.
        let signed = [Series::new(
            "signed",
            vec![(0.0, -1.0), (1.0, 0.0), (2.0, 0.5), (3.0, 2.0)],
        )
        .with_band(vec![(2.0, -0.5, 1.0), (3.0, 1.0, 3.0)])];
        let svg = line_chart("signed", "x", "y", &signed, true);
        assert_valid(&svg);
        // Constant series on a linear axis.
        let flat = [Series::new("flat", vec![(0.0, 0.0), (0.0, 0.0)])];
        assert_valid(&line_chart("flat", "x", "y", &flat, false));
        // Control characters in labels are replaced, not emitted raw.
        let ctrl = [Series::new("bell\u{7}", vec![(0.0, 1.0), (1.0, 2.0)])];
        let svg = line_chart("t\u{0}", "x", "y", &ctrl, false);
        assert_valid(&svg);
        assert!(!svg.contains('\u{7}') && !svg.contains('\u{0}'));
    }

    #[test]
    fn bar_chart_is_well_formed() {
        let bars = vec![
            ("softmax".to_string(), 0.71, 0.69, 0.73),
            ("linear <fast>".to_string(), 0.64, 0.60, 0.68),
            ("missing".to_string(), f64::NAN, f64::NAN, f64::NAN),
            ("no CI".to_string(), 0.5, f64::NAN, 0.6),
        ];
        let svg = bar_chart("Accuracy & CI", "accuracy", &bars);
        assert_valid(&svg);
        assert!(svg.contains("linear &lt;fast&gt;") && svg.contains("missing"));
        assert!(svg.contains("Accuracy &amp; CI"));
        assert_eq!(svg.matches("<rect").count(), 1 + 3); // background + drawn bars
        assert_eq!(svg.matches("stroke=\"#222\"").count(), 2); // error bars

        // Negative values draw a zero line; empty and all-NaN inputs still work.
        let mixed = vec![
            ("gain".to_string(), 0.3, 0.1, 0.5),
            ("loss".to_string(), -0.4, -0.6, -0.2),
        ];
        let svg = bar_chart("delta", "Δ", &mixed);
        assert_valid(&svg);
        assert!(svg.contains("stroke=\"#555\""));
        let svg = bar_chart("", "", &[]);
        assert_valid(&svg);
        assert!(svg.contains("no data"));
        assert_valid(&bar_chart(
            "nan",
            "y",
            &[("x".to_string(), f64::NAN, 0.0, 1.0)],
        ));
        assert_valid(&bar_chart("one", "y", &[("x".to_string(), 0.0, 0.0, 0.0)]));
    }

    #[test]
    fn helpers() {
        assert_eq!(num(1.0), "1");
        assert_eq!(num(-0.001), "0");
        assert_eq!(num(12.345), "12.35");
        assert_eq!(num(f64::NAN), "0");
        assert_eq!(escape("a<b>&'\"c"), "a&lt;b&gt;&amp;&apos;&quot;c");
        assert_eq!(colour(0), colour(PALETTE.len()));
    }
}
