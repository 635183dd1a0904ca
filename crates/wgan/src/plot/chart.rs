//! Line charts, and what every chart shares: axes fitted to the data, tick labels with the
//! decimals their spacing needs, the canvas and the bundled font.

use super::image::{encode_png, ColorKind};
use plotters::coord::types::RangedCoordf64;
use plotters::coord::Shift;
use plotters::prelude::*;
use std::sync::OnceLock;

/// Ten colours that tell classes (the digits) apart (matplotlib's "tab10").
pub const CLASS_COLORS: [(u8, u8, u8); 10] = [
    (31, 119, 180),
    (255, 127, 14),
    (44, 160, 44),
    (214, 39, 40),
    (148, 103, 189),
    (140, 86, 75),
    (227, 119, 194),
    (127, 127, 127),
    (188, 189, 34),
    (23, 190, 207),
];

/// Charts smaller than this cannot fit their title, tick labels and legend.
const MIN_CHART_SIZE: (u32, u32) = (120, 100);

/// Centred running median of `values`, the same length as the input.
///
/// The window at index i spans `i - (window - 1) / 2 ..= i + window / 2` (so an even window
/// reaches one further to the right), clipped to the input: near the ends the median is taken
/// over fewer values. A window holding an even number of values yields the mean of its two middle
/// values. A `window` of 0 is treated as 1 (the identity). Inputs are assumed free of NaN.
pub fn median_filter(values: &[f64], window: usize) -> Vec<f64> {
    let window = window.max(1);
    let reach_left = (window - 1) / 2;
    let reach_right = window / 2;
    let mut sorted = Vec::with_capacity(window);
    (0..values.len())
        .map(|i| {
            let start = i.saturating_sub(reach_left);
            let end = (i + reach_right + 1).min(values.len());
            sorted.clear();
            sorted.extend_from_slice(&values[start..end]);
            sorted.sort_unstable_by(f64::total_cmp);
            let middle = sorted.len() / 2;
            if sorted.len() % 2 == 1 {
                sorted[middle]
            } else {
                (sorted[middle - 1] + sorted[middle]) / 2.0
            }
        })
        .collect()
}

/// One line of a [`line_plot`].
#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    /// The legend entry; an empty name leaves the series out of the legend.
    pub name: String,
    /// (x, y) points, drawn in the given order; non-finite points are skipped.
    pub points: Vec<(f64, f64)>,
    pub color: (u8, u8, u8),
}

/// A line chart of `series` as an RGB PNG of `size` (width, height) pixels.
///
/// Both axes span all finite points of all series, with a 5% margin; a single point or a constant
/// coordinate still gets a visible, non-degenerate axis. Series with no finite points are left out
/// (legend included); a series of one point is drawn as a dot, since a line needs two. With no
/// finite points at all, the chart is drawn with empty unit axes.
///
/// Errors if `size` is too small to hold the chart's text, or if plotters fails to draw.
pub fn line_plot(
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[Series],
    size: (u32, u32),
) -> Result<Vec<u8>, String> {
    let panel = Panel {
        title: title.to_string(),
        x_label: x_label.to_string(),
        y_label: y_label.to_string(),
        series: series.to_vec(),
    };
    render_chart(size, |root| draw_panel(root, &panel, size))
}

/// One line chart of a [`panels`] figure.
#[derive(Clone, Debug, PartialEq)]
pub struct Panel {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub series: Vec<Series>,
}

/// Several line charts side by side, `columns` to a row, in one RGB PNG of `size` pixels; each
/// panel is drawn as [`line_plot`] draws its chart.
pub fn panels(panels: &[Panel], columns: usize, size: (u32, u32)) -> Result<Vec<u8>, String> {
    if panels.is_empty() || columns == 0 {
        return Err("panels: nothing to draw".to_string());
    }
    let rows = panels.len().div_ceil(columns);
    let cell = (size.0 / columns as u32, size.1 / rows as u32);
    if cell.0 < MIN_CHART_SIZE.0 || cell.1 < MIN_CHART_SIZE.1 {
        return Err(format!(
            "panels: cells of {}x{} are below the minimum of {}x{}",
            cell.0, cell.1, MIN_CHART_SIZE.0, MIN_CHART_SIZE.1
        ));
    }
    render_chart(size, |root| {
        for (area, panel) in root.split_evenly((rows, columns)).iter().zip(panels) {
            draw_panel(area, panel, cell)?;
        }
        Ok(())
    })
}

fn draw_panel(area: &DrawingArea<BitMapBackend<'_>, Shift>, panel: &Panel, size: (u32, u32)) -> Result<(), String> {
    let drawable: Vec<(&Series, Vec<(f64, f64)>)> = panel
        .series
        .iter()
        .filter_map(|s| {
            let finite: Vec<_> = s
                .points
                .iter()
                .copied()
                .filter(|(x, y)| x.is_finite() && y.is_finite())
                .collect();
            (!finite.is_empty()).then_some((s, finite))
        })
        .collect();
    let all_points = drawable.iter().flat_map(|(_, points)| points.iter());
    let x_range = padded_range(all_points.clone().map(|&(x, _)| x))?;
    let y_range = padded_range(all_points.map(|&(_, y)| y))?;

    let mut chart = ChartBuilder::on(area)
        .caption(&panel.title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(45)
        .y_label_area_size(70)
        .build_cartesian_2d(x_range.0..x_range.1, y_range.0..y_range.1)
        .map_err(|e| e.to_string())?;
    let (x_ticks, y_ticks) = tick_counts(size);
    let x_tick_label = tick_label_formatter(x_range, x_ticks);
    let y_tick_label = tick_label_formatter(y_range, y_ticks);
    chart
        .configure_mesh()
        .x_desc(&panel.x_label)
        .y_desc(&panel.y_label)
        .x_labels(x_ticks)
        .y_labels(y_ticks)
        .x_label_formatter(&x_tick_label)
        .y_label_formatter(&y_tick_label)
        .label_style(("sans-serif", 13))
        .axis_desc_style(("sans-serif", 15))
        .light_line_style(RGBColor(240, 240, 240))
        .draw()
        .map_err(|e| e.to_string())?;

    let mut has_legend = false;
    for (series, points) in &drawable {
        let (r, g, b) = series.color;
        let color = RGBColor(r, g, b);
        let annotation = if points.len() == 1 {
            chart.draw_series(points.iter().map(|&p| Circle::new(p, 4, color.filled())))
        } else {
            chart.draw_series(LineSeries::new(points.iter().copied(), color.stroke_width(2)))
        }
        .map_err(|e| e.to_string())?;
        if !series.name.is_empty() {
            has_legend = true;
            annotation
                .label(series.name.as_str())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
        }
    }
    if has_legend {
        draw_legend(&mut chart)?;
    }
    Ok(())
}

/// A chart on the RGB canvas, over f64 axes.
pub(super) type Chart<'a, 'b> = ChartContext<'a, BitMapBackend<'b>, Cartesian2d<RangedCoordf64, RangedCoordf64>>;

/// The legend of the labelled series, top right, on a translucent white box. Call it only when
/// some series has a label: plotters draws an empty box otherwise.
pub(super) fn draw_legend<'a, 'b: 'a>(chart: &mut Chart<'a, 'b>) -> Result<(), String> {
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .label_font(("sans-serif", 13))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(|e| e.to_string())
}

/// The span of `values` widened by 5% on each side; a single value or a constant gets ±0.5 (or
/// ±5% of its magnitude if larger), and no values at all give (0, 1).
fn padded_range(values: impl Iterator<Item = f64>) -> Result<(f64, f64), String> {
    let (low, high) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(low, high), v| {
        (low.min(v), high.max(v))
    });
    if low > high {
        return Ok((0.0, 1.0));
    }
    let span = high - low;
    if !span.is_finite() {
        return Err(format!("values from {low} to {high} span too wide a range to plot"));
    }
    let magnitude = low.abs().max(high.abs());
    // A span lost in rounding noise would give plotters ticks it cannot tell apart.
    let padding = if span > magnitude * 1e-9 {
        span * 0.05
    } else {
        (magnitude * 0.05).max(0.5)
    };
    Ok((low - padding, high + padding))
}

/// How many labelled ticks fit along the (x, y) axes of a chart of `size` pixels.
pub(super) fn tick_counts(size: (u32, u32)) -> (usize, usize) {
    ((size.0 as usize / 80).clamp(3, 10), (size.1 as usize / 40).clamp(3, 10))
}

/// Tick labels for an axis over `range` with at most `max_ticks` labels, all with the decimals
/// their spacing needs: plotters' own labels for f64 always show one decimal, so they read
/// "1000.0" for large values and "0.0" for every tick of an axis spanning 1e-5.
pub(super) fn tick_label_formatter(range: (f64, f64), max_ticks: usize) -> impl Fn(&f64) -> String {
    let step = tick_step(range.1 - range.0, max_ticks);
    let step_exponent = step.log10().floor() as i32;
    let magnitude = range.0.abs().max(range.1.abs());
    let magnitude_exponent = if magnitude > 0.0 {
        magnitude.log10().floor() as i32
    } else {
        0
    };
    // Decimals past the fourth, or seven-digit values, read better in scientific notation.
    let scientific = step_exponent < -4 || magnitude_exponent >= 6;
    move |&value: &f64| {
        // plotters' ticks carry rounding noise (the zero tick of a ±1e-5 axis is -2e-21); adding
        // 0.0 then turns -0.0 into 0.0, so zero is not printed as "-0".
        let value = if value.abs() < step * 1e-6 { 0.0 } else { value } + 0.0;
        if value == 0.0 {
            "0".to_string()
        } else if scientific {
            let exponent = value.abs().log10().floor() as i32;
            let mantissa_digits = (exponent - step_exponent).clamp(0, 6) as usize;
            format!("{value:.mantissa_digits$e}")
        } else {
            let decimals = (-step_exponent).max(0) as usize;
            format!("{value:.decimals$}")
        }
    }
}

/// The spacing of ticks over a span, as plotters chooses it: the smallest 1, 2 or 5 times a power
/// of ten that puts at most `max_ticks` ticks on the span.
fn tick_step(span: f64, max_ticks: usize) -> f64 {
    // NaN fails is_finite.
    if span <= 0.0 || !span.is_finite() {
        return 1.0;
    }
    let max_ticks = max_ticks.max(1) as f64;
    let mut step = 10f64.powf((span / max_ticks).log10().floor());
    loop {
        for factor in [1.0, 2.0, 5.0] {
            if (span / (step * factor)).floor() + 1.0 <= max_ticks {
                return step * factor;
            }
        }
        step *= 10.0;
    }
}

/// Draw a chart with `draw` onto a white RGB canvas of `size` pixels and encode it as PNG.
pub(super) fn render_chart(
    size: (u32, u32),
    draw: impl FnOnce(&DrawingArea<BitMapBackend<'_>, Shift>) -> Result<(), String>,
) -> Result<Vec<u8>, String> {
    if size.0 < MIN_CHART_SIZE.0 || size.1 < MIN_CHART_SIZE.1 {
        return Err(format!(
            "chart size {}x{} is below the minimum of {}x{}",
            size.0, size.1, MIN_CHART_SIZE.0, MIN_CHART_SIZE.1
        ));
    }
    register_font()?;
    let mut pixels = vec![0u8; size.0 as usize * size.1 as usize * ColorKind::Rgb.bytes_per_pixel()];
    {
        let root = BitMapBackend::with_buffer(&mut pixels, size).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        draw(&root)?;
        root.present().map_err(|e| e.to_string())?;
    }
    Ok(encode_png(size.0, size.1, ColorKind::Rgb, &pixels))
}

/// Make the bundled DejaVu Sans plotters' "sans-serif" family; with the ab_glyph backend plotters
/// knows no fonts but those registered, and registering replaces, so it is done once per process.
fn register_font() -> Result<(), String> {
    static REGISTERED: OnceLock<Result<(), String>> = OnceLock::new();
    REGISTERED
        .get_or_init(|| {
            plotters::style::register_font("sans-serif", FontStyle::Normal, dejavu::sans::regular())
                .map_err(|_| "the bundled DejaVu Sans font could not be loaded".to_string())
        })
        .clone()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plot::testing::{count_color, decode_chart, distinct_colors, series, BLUE, RED};

    #[test]
    fn median_filter_clips_the_window_at_the_ends() {
        assert_eq!(
            median_filter(&[1.0, 100.0, 2.0, 3.0, 4.0], 3),
            [50.5, 2.0, 3.0, 3.0, 3.5]
        );
    }

    #[test]
    fn median_filter_even_window_reaches_right_and_averages_the_middle_pair() {
        // Window 4 at i spans i-1 ..= i+2.
        assert_eq!(median_filter(&[4.0, 1.0, 3.0, 2.0, 10.0], 4), [3.0, 2.5, 2.5, 3.0, 6.0]);
    }

    #[test]
    fn median_filter_edge_cases() {
        let values = [3.0, -1.0, 7.0, 0.5];
        assert_eq!(median_filter(&values, 1), values);
        assert_eq!(median_filter(&values, 0), values);
        // A window wider than the input covers it all everywhere.
        assert_eq!(median_filter(&values, 50), [1.75; 4]);
        assert!(median_filter(&[], 5).is_empty());
    }

    #[test]
    fn line_plot_draws_every_series_in_its_colour() {
        let decaying: Vec<(f64, f64)> = (0..200).map(|i| (i as f64, (-(i as f64) / 50.0).exp())).collect();
        let rising: Vec<(f64, f64)> = (0..200).map(|i| (i as f64, i as f64 / 200.0)).collect();
        let plot = line_plot(
            "losses",
            "step",
            "loss",
            &[series("critic", decaying, RED), series("generator", rising, BLUE)],
            (640, 400),
        )
        .unwrap();
        let pixels = decode_chart(&plot, (640, 400));
        assert!(count_color(&pixels, RED) > 100);
        assert!(count_color(&pixels, BLUE) > 100);
        // Text is antialiased: many distinct grays beyond the flat fills.
        assert!(distinct_colors(&pixels) > 20);
    }

    #[test]
    fn chart_text_is_rendered_with_the_bundled_font() {
        let pixels_titled =
            |title: &str| decode_chart(&line_plot(title, "x", "y", &[], (300, 200)).unwrap(), (300, 200));
        let differing = pixels_titled("A")
            .iter()
            .zip(pixels_titled("WWWW WWWW"))
            .filter(|(a, b)| **a != *b)
            .count();
        assert!(differing > 100, "only {differing} bytes differ between two titles");
    }

    #[test]
    fn line_plot_draws_a_single_point_and_constant_values() {
        // Unnamed series keep the legend from supplying the colour the check looks for.
        let single = line_plot("one", "x", "y", &[series("", vec![(3.0, 7.0)], RED)], (300, 200)).unwrap();
        assert!(count_color(&decode_chart(&single, (300, 200)), RED) > 10);

        let flat: Vec<(f64, f64)> = (0..10).map(|i| (i as f64, 2.5)).collect();
        let constant = line_plot("flat", "x", "y", &[series("", flat, BLUE)], (300, 200)).unwrap();
        assert!(count_color(&decode_chart(&constant, (300, 200)), BLUE) > 100);
    }

    #[test]
    fn line_plot_skips_non_finite_points_and_empty_series() {
        let points = vec![(0.0, 1.0), (1.0, f64::NAN), (f64::INFINITY, 2.0), (2.0, 3.0)];
        let all_bad = vec![(f64::NAN, 0.0), (0.0, f64::NEG_INFINITY)];
        let plot = line_plot(
            "t",
            "x",
            "y",
            &[
                series("", points, RED),
                series("bad", all_bad, BLUE),
                series("empty", vec![], BLUE),
            ],
            (300, 200),
        )
        .unwrap();
        let pixels = decode_chart(&plot, (300, 200));
        assert!(count_color(&pixels, RED) > 10);
        // The skipped series have no line and no legend entry.
        assert_eq!(count_color(&pixels, BLUE), 0);
    }

    #[test]
    fn line_plot_without_data_draws_empty_axes() {
        let pixels = decode_chart(
            &line_plot("nothing yet", "x", "y", &[], (300, 200)).unwrap(),
            (300, 200),
        );
        assert!(distinct_colors(&pixels) > 2);
    }

    #[test]
    fn charts_reject_a_size_too_small_for_their_text() {
        assert!(line_plot("t", "x", "y", &[], (50, 400)).is_err());
        assert!(line_plot("t", "x", "y", &[], (400, 20)).is_err());
    }

    #[test]
    fn panels_draw_each_chart_in_its_own_cell() {
        let line = |color| Panel {
            title: "p".into(),
            x_label: "x".into(),
            y_label: "y".into(),
            series: vec![series("", (0..50).map(|i| (i as f64, (i * i) as f64)).collect(), color)],
        };
        let plot = panels(&[line(RED), line(BLUE), line(RED)], 2, (800, 600)).unwrap();
        let pixels = decode_chart(&plot, (800, 600));
        let (width, height) = (800usize, 600usize);
        // The red curves sit in the left column, the blue one top right.
        let count_in = |color: (u8, u8, u8), columns: std::ops::Range<usize>, rows: std::ops::Range<usize>| {
            rows.flat_map(|y| columns.clone().map(move |x| (y * width + x) * 3))
                .filter(|&i| (pixels[i], pixels[i + 1], pixels[i + 2]) == color)
                .count()
        };
        assert!(count_in(RED, 0..width / 2, 0..height / 2) > 50);
        assert!(count_in(RED, 0..width / 2, height / 2..height) > 50);
        assert!(count_in(BLUE, width / 2..width, 0..height / 2) > 50);
        assert_eq!(count_in(BLUE, 0..width / 2, 0..height), 0);
        assert!(panels(&[], 2, (800, 600)).is_err());
        assert!(panels(&[line(RED)], 8, (800, 600)).is_err());
    }
}
