//! Bar charts: one bar per variant, anchored at zero, with a 95 % error bar.

use super::axis::{Axis, Extent};
use super::canvas::{
    Frame, colour, draw_axis_lines, draw_y_axis, escape, no_data, num, open_document,
};
use super::ticks::format_value;
use std::fmt::Write as _;

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
    let base = Frame::default();
    let slot = (base.right - base.left) / bars.len().max(1) as f64;
    let labels = LabelLayout::for_labels(bars.iter().map(|b| b.0.as_str()), slot);
    // Slanted labels take the room below the axis they need, from the plot's height.
    let frame = Frame { bottom: base.bottom - labels.extra_bottom(), ..base };

    let mut out = String::new();
    open_document(&mut out, title);
    draw_y_axis(&mut out, &frame, &y_axis, y_label);

    let zero = frame.y(&y_axis, 0.0_f64.clamp(y_axis.lo, y_axis.hi));
    let mut drawn = 0;
    for (i, (label, value, lo, hi)) in bars.iter().enumerate() {
        let centre = frame.left + slot * (i as f64 + 0.5);
        match labels {
            LabelLayout::Level => w!(
                out,
                "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{}</text>\n",
                num(centre),
                num(frame.bottom + 18.0),
                escape(label)
            ),
            LabelLayout::Slanted { .. } => {
                let y = frame.bottom + 12.0;
                w!(
                    out,
                    "<text x=\"{x}\" y=\"{y}\" text-anchor=\"end\" transform=\"rotate(-{SLANT_DEGREES} {x} {y})\">{}</text>\n",
                    escape(label),
                    x = num(centre + 4.0),
                    y = num(y)
                );
            }
        }
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

/// Width of a label at the charts' 12 px font: an average DejaVu Sans glyph is about 0.6 em.
/// An estimate (the SVG is rendered elsewhere), generous enough for digits and lower case.
const GLYPH_WIDTH: f64 = 7.2;
/// How far slanted labels lean from the horizontal.
const SLANT_DEGREES: f64 = 40.0;

/// How the bar labels are set: level under each bar when the longest fits its slot, else
/// slanted (parallel lines a slot's width apart, so they never touch while the slot is wider
/// than a line over sin 40°), taking the room below the axis their length needs.
#[derive(Clone, Copy, Debug, PartialEq)]
enum LabelLayout {
    Level,
    Slanted { longest: f64 },
}

impl LabelLayout {
    fn for_labels<'a>(labels: impl Iterator<Item = &'a str>, slot: f64) -> Self {
        let longest = labels.map(|l| l.chars().count() as f64 * GLYPH_WIDTH).fold(0.0, f64::max);
        if longest <= slot - 6.0 { Self::Level } else { Self::Slanted { longest } }
    }

    /// Pixels the plot gives up at its bottom for the labels (at most half the chart).
    fn extra_bottom(self) -> f64 {
        match self {
            Self::Level => 0.0,
            // 52 px are below the plot already; the slanted text drops longest·sin θ from 12 px.
            // The text's own height (its 14 px line, leaning) comes on top of its length.
            Self::Slanted { longest } => {
                (12.0 + longest * SLANT_DEGREES.to_radians().sin() + 16.0 - 52.0).clamp(0.0, 170.0)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Line height of a 12 px label, the least distance two labels need between them.
    const LINE_HEIGHT: f64 = 14.0;
    use crate::plots::well_formed::assert_valid;

    /// Labels never overlap: level ones fit their slot; slanted ones are parallel lines whose
    /// spacing (slot · sin θ) exceeds a line's height, and the plot makes room for their length.
    #[test]
    fn long_labels_are_slanted_apart_and_get_room_below_the_axis() {
        let short: Vec<(String, f64, f64, f64)> = ["softmax", "linear", "taylor"]
            .iter()
            .map(|l| (l.to_string(), 0.5, 0.4, 0.6))
            .collect();
        let svg = bar_chart("short", "y", &short);
        assert!(!svg.contains("rotate(-40"), "three short labels fit level");
        // scaling-sim's saturated.png: 12 labels like "d=16 sum_key_norms" in 548 px.
        let long: Vec<(String, f64, f64, f64)> = [16, 64, 256]
            .iter()
            .flat_map(|d| {
                ["1", "sqrt_d", "sum_key_norms", "num_keys"]
                    .map(move |v| (format!("d={d} {v}"), 0.3, f64::NAN, f64::NAN))
            })
            .collect();
        let svg = bar_chart("long", "fraction", &long);
        assert_valid(&svg);
        assert_eq!(svg.matches("rotate(-40").count(), 12);
        let base = Frame::default();
        let slot = (base.right - base.left) / long.len() as f64;
        let layout = LabelLayout::for_labels(long.iter().map(|b| b.0.as_str()), slot);
        let LabelLayout::Slanted { longest } = layout else { panic!("long labels are slanted") };
        assert!(longest > slot, "they would overlap level");
        assert!(
            slot * SLANT_DEGREES.to_radians().sin() >= LINE_HEIGHT,
            "slanted lines {slot} apart touch"
        );
        // The slanted labels end above the document's bottom edge (400 px).
        let bottom = base.bottom - layout.extra_bottom();
        assert!(bottom + 12.0 + longest * SLANT_DEGREES.to_radians().sin() <= 400.0, "{bottom}");
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
        let mixed =
            vec![("gain".to_string(), 0.3, 0.1, 0.5), ("loss".to_string(), -0.4, -0.6, -0.2)];
        let svg = bar_chart("delta", "Δ", &mixed);
        assert_valid(&svg);
        assert!(svg.contains("stroke=\"#555\""));
        let svg = bar_chart("", "", &[]);
        assert_valid(&svg);
        assert!(svg.contains("no data"));
        assert_valid(&bar_chart("nan", "y", &[("x".to_string(), f64::NAN, 0.0, 1.0)]));
        assert_valid(&bar_chart("one", "y", &[("x".to_string(), 0.0, 0.0, 0.0)]));
    }
}
