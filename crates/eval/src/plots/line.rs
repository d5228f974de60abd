//! Line charts: one polyline per [`Series`] (e.g. loss against step), with an optional shaded
//! band per series, a linear or logarithmic y axis, and a legend.

use super::axis::{Axis, Extent};
use super::canvas::{
    Frame, colour, dash, draw_axis_lines, draw_legend, draw_x_label, draw_x_ticks, draw_y_axis,
    escape, no_data, num, open_document, point_list,
};
use std::fmt::Write as _;

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
        Self { label: label.into(), points, band: None }
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
    chart(title, x_label, y_label, series, log_y, &[])
}

/// A line chart of accuracies (or any fraction): its linear y axis always spans 0 to 1, so that
/// arms that all recall draw as the flat line they are rather than a gap the axis stretched
/// out of seed noise.
pub fn accuracy_chart(title: &str, x_label: &str, y_label: &str, series: &[Series]) -> String {
    chart(title, x_label, y_label, series, false, &[0.0, 1.0])
}

/// `line_chart` whose y axis also covers the values `y_covers` (e.g. a fraction's 0 and 1).
fn chart(
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[Series],
    log_y: bool,
    y_covers: &[f64],
) -> String {
    let y_ok = |y: f64| y.is_finite() && (!log_y || y > 0.0);

    let mut xs = Extent::default();
    let mut ys = Extent::default();
    for &y in y_covers.iter().filter(|&&y| y_ok(y)) {
        ys.add(y);
    }
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
    let y_axis = if log_y { Axis::log(ys) } else { Axis::linear(ys) };
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
        let upper = band.iter().map(|&&(x, _, hi)| (frame.x(&x_axis, x), frame.y(&y_axis, hi)));
        let lower =
            band.iter().rev().map(|&&(x, lo, _)| (frame.x(&x_axis, x), frame.y(&y_axis, lo)));
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
                "<polyline points=\"{}\" fill=\"none\" stroke=\"{}\" stroke-width=\"2\"{} \
                 stroke-linejoin=\"round\" stroke-linecap=\"round\"><title>{}</title></polyline>\n",
                point_list(pts.iter().copied()),
                colour(i),
                dash(i),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plots::canvas::PALETTE;
    use crate::plots::well_formed::assert_valid;

    fn sample_series() -> Vec<Series> {
        let steps = (0..50).map(|i| i as f64 * 100.0);
        vec![
            Series::new(
                "softmax <baseline> & \"friends\"",
                steps.clone().map(|s| (s, 5.0 * (-s / 2000.0).exp() + 1.0)).collect(),
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
    fn series_past_the_palette_are_dashed_in_the_plot_and_the_legend() {
        let series: Vec<Series> = (0..PALETTE.len() + 2)
            .map(|i| Series::new(format!("s{i}"), vec![(0.0, i as f64), (1.0, i as f64)]))
            .collect();
        let svg = line_chart("many", "x", "y", &series, false);
        assert_valid(&svg);
        // Two dashed polylines and their two legend lines; the first eight stay solid.
        assert_eq!(svg.matches("stroke-dasharray=\"7 4\"").count(), 4, "{svg}");
    }

    #[test]
    fn line_chart_is_well_formed_and_labelled() {
        for log_y in [false, true] {
            let svg = line_chart("Loss & <perplexity>", "step", "loss", &sample_series(), log_y);
            assert_valid(&svg);
            assert!(svg.contains("softmax &lt;baseline&gt; &amp; &quot;friends&quot;"));
            assert!(svg.contains("linear&apos;attn"));
            assert!(svg.contains("Loss &amp; &lt;perplexity&gt;"));
            assert_eq!(svg.matches("<polyline").count(), 2);
            assert_eq!(svg.matches("<polygon").count(), 1);
            assert!(svg.contains(PALETTE[0]) && svg.contains(PALETTE[1]));
        }
    }

    /// Every polyline vertex `(x, y)` of a chart, in SVG units.
    fn polyline_points(svg: &str) -> Vec<(f64, f64)> {
        svg.split("<polyline points=\"")
            .skip(1)
            .flat_map(|poly| {
                let pts = &poly[..poly.find('"').unwrap()];
                pts.split(' ')
                    .map(|pair| {
                        let (x, y) = pair.split_once(',').unwrap();
                        (x.parse::<f64>().unwrap(), y.parse::<f64>().unwrap())
                    })
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    #[test]
    fn line_chart_coordinates_stay_in_the_plot() {
        let svg = line_chart("t", "x", "y", &sample_series(), false);
        let frame = Frame::default();
        for (x, y) in polyline_points(&svg) {
            assert!(x >= frame.left - 1e-9 && x <= frame.right + 1e-9, "{x}");
            assert!(y >= frame.top - 1e-9 && y <= frame.bottom + 1e-9, "{y}");
        }
    }

    #[test]
    fn accuracy_chart_spans_zero_to_one_where_line_chart_zooms_in() {
        // hybrid-ratio's width-32 line: 0.994 to 0.999, a flat line at this scale.
        let series = [Series::new(
            "width 32",
            vec![(0.0, 0.9938), (1.0, 0.9971), (2.0, 0.9987), (4.0, 0.9977)],
        )];
        let frame = Frame::default();
        let plot_height = frame.bottom - frame.top;
        let ys = |svg: &str| polyline_points(svg).into_iter().map(|(_, y)| y).collect::<Vec<f64>>();
        let spread = |ys: Vec<f64>| {
            ys.iter().cloned().fold(f64::NEG_INFINITY, f64::max)
                - ys.iter().cloned().fold(f64::INFINITY, f64::min)
        };

        let zoomed = line_chart("t", "x", "accuracy", &series, false);
        let full = accuracy_chart("t", "x", "accuracy", &series);
        assert_valid(&full);
        // Zoomed, the 0.005 range fills over half the plot; on 0..1 it is under 1% of it.
        assert!(spread(ys(&zoomed)) > 0.5 * plot_height);
        assert!(spread(ys(&full)) < 0.01 * plot_height);
        // The axis is exactly 0..1: accuracy 0.9987 sits 0.13% of the plot below its top edge.
        let top_of_line = ys(&full).into_iter().fold(f64::INFINITY, f64::min);
        assert!(
            (top_of_line - (frame.top + (1.0 - 0.9987) * plot_height)).abs() < 0.01,
            "{top_of_line}"
        );
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
            Series::new("nan only", vec![(f64::NAN, f64::NAN), (1.0, f64::NEG_INFINITY)]),
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
        let signed = [Series::new("signed", vec![(0.0, -1.0), (1.0, 0.0), (2.0, 0.5), (3.0, 2.0)])
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
}
