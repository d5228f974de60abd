//! The SVG document every chart draws on: its size and colour palette, the plot [`Frame`], and
//! the pieces charts share (title, grid and tick labels, axis lines, legend, the "no data"
//! note), plus the number and text formatting that keeps the markup valid.

use super::axis::Axis;
use std::fmt::Write as _;

const WIDTH: f64 = 640.0;
const HEIGHT: f64 = 400.0;

/// Okabe–Ito colours; yellow comes last because it is faint on white.
pub(super) const PALETTE: [&str; 8] =
    ["#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#000000", "#F0E442"];

pub(super) fn colour(i: usize) -> &'static str {
    PALETTE[i % PALETTE.len()]
}

/// The line style of series `i`: solid for the palette's first round, then dashed, then dotted,
/// so series that share a colour (more than eight) stay apart. An SVG attribute, or empty.
pub(super) fn dash(i: usize) -> &'static str {
    match i / PALETTE.len() % 3 {
        0 => "",
        1 => " stroke-dasharray=\"7 4\"",
        _ => " stroke-dasharray=\"2 3\"",
    }
}

/// The plot area inside the document, in SVG user units.
pub(super) struct Frame {
    pub(super) left: f64,
    pub(super) right: f64,
    pub(super) top: f64,
    pub(super) bottom: f64,
}

impl Default for Frame {
    fn default() -> Self {
        Self { left: 72.0, right: WIDTH - 20.0, top: 40.0, bottom: HEIGHT - 52.0 }
    }
}

impl Frame {
    pub(super) fn x(&self, axis: &Axis, v: f64) -> f64 {
        self.left + axis.fraction(v) * (self.right - self.left)
    }

    pub(super) fn y(&self, axis: &Axis, v: f64) -> f64 {
        self.bottom - axis.fraction(v) * (self.bottom - self.top)
    }
}

/// The title's font size: 15 where it fits the document's width, smaller for a long title (a
/// reproduction's titles name the task, the sweep and the selection rule), so that neither end
/// is cut off. Bold sans-serif glyphs average about 0.6 em; never below 9.
pub(super) fn title_font_size(title: &str) -> f64 {
    const LARGEST: f64 = 15.0;
    let room = WIDTH - 16.0;
    let chars = title.chars().count().max(1) as f64;
    (room / (0.6 * chars)).clamp(9.0, LARGEST)
}

pub(super) fn open_document(out: &mut String, title: &str) {
    w!(
        out,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{HEIGHT}\" \
         viewBox=\"0 0 {WIDTH} {HEIGHT}\" font-family=\"Helvetica, Arial, sans-serif\" \
         font-size=\"12\">\n<title>{t}</title>\n\
         <rect width=\"{WIDTH}\" height=\"{HEIGHT}\" fill=\"white\"/>\n\
         <text x=\"{}\" y=\"24\" text-anchor=\"middle\" font-size=\"{}\" \
         font-weight=\"bold\">{t}</text>\n",
        WIDTH / 2.0,
        num(title_font_size(title)),
        t = escape(title)
    );
}

/// Horizontal grid lines, y tick labels and the rotated y-axis title.
pub(super) fn draw_y_axis(out: &mut String, frame: &Frame, axis: &Axis, label: &str) {
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
pub(super) fn draw_x_ticks(out: &mut String, frame: &Frame, axis: &Axis) {
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

pub(super) fn draw_x_label(out: &mut String, frame: &Frame, label: &str) {
    w!(
        out,
        "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{}</text>\n",
        num((frame.left + frame.right) / 2.0),
        num(HEIGHT - 12.0),
        escape(label)
    );
}

pub(super) fn draw_axis_lines(out: &mut String, frame: &Frame) {
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
pub(super) fn draw_legend<'a>(
    out: &mut String,
    frame: &Frame,
    labels: impl Iterator<Item = &'a str>,
) {
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
            "<line x1=\"{}\" y1=\"{ry}\" x2=\"{}\" y2=\"{ry}\" stroke=\"{}\" stroke-width=\"3\"{}/>\n\
             <text x=\"{}\" y=\"{ry}\" dy=\"0.35em\">{}</text>\n",
            num(x + 6.0),
            num(x + 26.0),
            colour(i),
            dash(i),
            num(x + 32.0),
            escape(label),
            ry = num(row_y)
        );
    }
    out.push_str("</g>\n");
}

pub(super) fn no_data(out: &mut String, frame: &Frame) {
    w!(
        out,
        "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\" fill=\"#888\">no data</text>\n",
        num((frame.left + frame.right) / 2.0),
        num((frame.top + frame.bottom) / 2.0)
    );
}

pub(super) fn point_list(points: impl Iterator<Item = (f64, f64)>) -> String {
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
pub(super) fn num(v: f64) -> String {
    let v = if v.is_finite() { v } else { 0.0 };
    let s = format!("{v:.2}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" { "0".into() } else { s.into() }
}

/// Escapes text for XML content and attributes, replacing control characters
/// that XML 1.0 forbids outright.
pub(super) fn escape(text: &str) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn helpers() {
        assert_eq!(num(1.0), "1");
        assert_eq!(num(-0.001), "0");
        assert_eq!(num(12.345), "12.35");
        assert_eq!(num(f64::NAN), "0");
        assert_eq!(escape("a<b>&'\"c"), "a&lt;b&gt;&amp;&apos;&quot;c");
        assert_eq!(colour(0), colour(PALETTE.len()));
    }

    #[test]
    fn a_long_title_shrinks_to_the_width_and_a_short_one_keeps_its_size() {
        assert_eq!(title_font_size("Training loss"), 15.0);
        // hybrid-ratio's title: 85 characters, cut off at both ends at size 15.
        let long =
            "MQAR accuracy vs softmax layers in a 4-layer Gated DeltaNet stack (best lr per stack)";
        let size = title_font_size(long);
        assert!((9.0..15.0).contains(&size), "{size}");
        assert!(0.6 * size * long.chars().count() as f64 <= WIDTH - 16.0 + 1e-9, "{size}");
        let mut svg = String::new();
        open_document(&mut svg, long);
        assert!(svg.contains(&format!("font-size=\"{}\"", num(size))), "{svg}");
        // Past the floor the size stays readable rather than vanishing.
        assert_eq!(title_font_size(&"x".repeat(500)), 9.0);
    }
}
