//! Bar charts: one bar per variant, anchored at zero, with a 95 % error bar.

use super::axis::{Axis, Extent};
use super::canvas::{Frame, colour, draw_axis_lines, draw_y_axis, escape, no_data, num, open_document};
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plots::well_formed::assert_valid;

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

}
