//! The pictures a GAN user looks at: grids of generated samples, loss curves and bar charts.
//!
//! Everything is returned as PNG bytes in memory so that callers decide where (and how
//! atomically) files get written. Charts are drawn with plotters into an RGB buffer; their text
//! uses the DejaVu Sans font compiled into the binary, so no system fonts or fontconfig are needed.

use earthmover_tensor::Tensor;
use plotters::coord::Shift;
use plotters::prelude::*;
use std::sync::OnceLock;

/// The gray of the lines between (and around) the images of a [`sample_grid`], and of its unused
/// cells: dark enough not to be mistaken for a digit's stroke, light enough to tell from the
/// black background of an image.
pub const SEPARATOR_GRAY: u8 = 64;

/// The width in pixels of the separator lines of a [`sample_grid`].
pub const SEPARATOR_WIDTH: usize = 2;

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

/// The pixel layout of the buffer handed to [`encode_png`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ColorKind {
    /// One byte per pixel.
    Gray,
    /// Three bytes per pixel: red, green, blue.
    Rgb,
}

impl ColorKind {
    fn bytes_per_pixel(self) -> usize {
        match self {
            ColorKind::Gray => 1,
            ColorKind::Rgb => 3,
        }
    }
}

/// Encode an 8-bit, row-major pixel buffer as PNG.
pub fn encode_png(width: u32, height: u32, color: ColorKind, pixels: &[u8]) -> Vec<u8> {
    debug_assert_eq!(
        pixels.len(),
        width as usize * height as usize * color.bytes_per_pixel(),
        "encode_png: buffer size does not match a {width}x{height} {color:?} image"
    );
    let mut png_bytes = Vec::new();
    let mut encoder = png::Encoder::new(&mut png_bytes, width, height);
    encoder.set_color(match color {
        ColorKind::Gray => png::ColorType::Grayscale,
        ColorKind::Rgb => png::ColorType::Rgb,
    });
    encoder.set_depth(png::BitDepth::Eight);
    // Writing into a Vec cannot fail for I/O reasons; the only failures left are a wrong buffer
    // size or zero dimensions, both programmer errors.
    let mut writer = encoder.write_header().expect("encode_png: invalid image dimensions");
    writer
        .write_image_data(pixels)
        .expect("encode_png: pixel buffer does not match the image size");
    writer.finish().expect("encode_png: finishing the PNG stream");
    png_bytes
}

/// Lay out images `[N, 1, H, W]` in a grid of `columns` columns as a grayscale PNG.
///
/// Pixel values are expected in `range` (e.g. `(0.0, 1.0)` or `(-1.0, 1.0)`); they are clamped to
/// it and mapped linearly to 0..=255, so the digits come out white on black like MNIST (NaN maps
/// to black). Each image is upscaled `scale` times by nearest neighbour. Images are separated, and
/// the grid framed, by [`SEPARATOR_WIDTH`]-pixel lines of [`SEPARATOR_GRAY`]; the unused cells of
/// a partial last row are filled with that gray too, so they cannot pass for black samples.
///
/// `columns` is capped at N (a grid wider than its images only adds empty cells); `columns` and
/// `scale` of 0 are treated as 1. N = 0 gives an image of just the top and bottom frame lines.
///
/// # Panics
/// If `images` is not of rank 4 with one channel, or `range` is not an increasing finite pair.
pub fn sample_grid(images: &Tensor, range: (f64, f64), columns: usize, scale: usize) -> Vec<u8> {
    let shape = images.shape();
    assert!(
        shape.len() == 4 && shape[1] == 1,
        "sample_grid: expected images of shape [N, 1, H, W], got {shape:?}"
    );
    let (low, high) = range;
    assert!(
        low.is_finite() && high.is_finite() && low < high,
        "sample_grid: range must be an increasing finite pair, got {range:?}"
    );
    let (count, image_height, image_width) = (shape[0], shape[2], shape[3]);
    let scale = scale.max(1);
    let columns = columns.max(1).min(count.max(1));
    let rows = count.div_ceil(columns);

    let cell_width = image_width * scale;
    let cell_height = image_height * scale;
    let grid_width = columns * cell_width + (columns + 1) * SEPARATOR_WIDTH;
    let grid_height = rows * cell_height + (rows + 1) * SEPARATOR_WIDTH;
    let mut grid = vec![SEPARATOR_GRAY; grid_width * grid_height];

    let values = images.to_vec_f32();
    let to_byte = |value: f32| {
        let unit = ((f64::from(value) - low) / (high - low)).clamp(0.0, 1.0);
        // `as` maps NaN to 0, i.e. black.
        (unit * 255.0).round() as u8
    };
    // chunks_exact panics on a chunk size of 0, and empty images have no pixels to place anyway.
    let image_size = (image_height * image_width).max(1);
    for (index, image) in values.chunks_exact(image_size).enumerate() {
        let left = SEPARATOR_WIDTH + (index % columns) * (cell_width + SEPARATOR_WIDTH);
        let top = SEPARATOR_WIDTH + (index / columns) * (cell_height + SEPARATOR_WIDTH);
        for y in 0..cell_height {
            let source_row = &image[(y / scale) * image_width..][..image_width];
            let target_row = &mut grid[(top + y) * grid_width + left..][..cell_width];
            for (x, target) in target_row.iter_mut().enumerate() {
                *target = to_byte(source_row[x / scale]);
            }
        }
    }
    encode_png(grid_width as u32, grid_height as u32, ColorKind::Gray, &grid)
}

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
    // plotters draws an empty legend box when no series is labelled.
    if has_legend {
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .label_font(("sans-serif", 13))
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// A scalar field over a rectangle, drawn as filled contours, with points on top: a critic's
/// values over the plane with real and generated samples, or a class histogram over time.
#[derive(Clone, Debug, PartialEq)]
pub struct Field {
    /// The rectangle the field covers: x from `x_range.0` to `x_range.1`, y likewise.
    pub x_range: (f64, f64),
    pub y_range: (f64, f64),
    /// `rows x columns` values, row 0 at the bottom (lowest y), column 0 at the left.
    pub values: Vec<f64>,
    pub rows: usize,
    pub columns: usize,
    /// How many bands the value range is cut into (filled contours); 0 shades continuously.
    pub levels: usize,
}

/// Points drawn over a [`Field`]: a legend name, the points, and their colour.
pub type Scatter = Series;

/// A [`Field`] as filled contours (white for its lowest band to dark green for its highest),
/// with `scatter` sets drawn as small dots on top, as an RGB PNG of `size` pixels.
pub fn field_plot(
    title: &str,
    x_label: &str,
    y_label: &str,
    field: &Field,
    scatter: &[Scatter],
    size: (u32, u32),
) -> Result<Vec<u8>, String> {
    if field.rows == 0 || field.columns == 0 || field.values.len() != field.rows * field.columns {
        return Err(format!(
            "field_plot: {} values for a {}x{} grid",
            field.values.len(),
            field.rows,
            field.columns
        ));
    }
    let (x0, x1) = field.x_range;
    let (y0, y1) = field.y_range;
    if !(x0 < x1 && y0 < y1) {
        return Err("field_plot: empty rectangle".to_string());
    }
    let finite = || field.values.iter().copied().filter(|v| v.is_finite());
    let low = finite().fold(f64::INFINITY, f64::min);
    let high = finite().fold(f64::NEG_INFINITY, f64::max);
    let span = if high > low { high - low } else { 1.0 };
    let shade = |v: f64| -> RGBColor {
        if !v.is_finite() {
            return RGBColor(255, 255, 255);
        }
        let mut t = ((v - low) / span).clamp(0.0, 1.0);
        if field.levels > 0 {
            let band = (t * field.levels as f64).floor().min(field.levels as f64 - 1.0);
            t = band / (field.levels as f64 - 1.0).max(1.0);
        }
        let mix = |a: f64, b: f64| (a + (b - a) * t).round() as u8;
        RGBColor(mix(255.0, 20.0), mix(255.0, 110.0), mix(255.0, 60.0))
    };
    render_chart(size, |root| {
        let mut chart = ChartBuilder::on(root)
            .caption(title, ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(45)
            .y_label_area_size(60)
            .build_cartesian_2d(x0..x1, y0..y1)
            .map_err(|e| e.to_string())?;
        let (x_ticks, y_ticks) = tick_counts(size);
        let x_tick_label = tick_label_formatter((x0, x1), x_ticks);
        let y_tick_label = tick_label_formatter((y0, y1), y_ticks);
        chart
            .configure_mesh()
            .disable_mesh()
            .x_desc(x_label)
            .y_desc(y_label)
            .x_labels(x_ticks)
            .y_labels(y_ticks)
            .x_label_formatter(&x_tick_label)
            .y_label_formatter(&y_tick_label)
            .label_style(("sans-serif", 13))
            .axis_desc_style(("sans-serif", 15))
            .draw()
            .map_err(|e| e.to_string())?;
        let (dx, dy) = ((x1 - x0) / field.columns as f64, (y1 - y0) / field.rows as f64);
        chart
            .draw_series((0..field.rows).flat_map(|r| {
                (0..field.columns).map(move |c| {
                    let corner = (x0 + c as f64 * dx, y0 + r as f64 * dy);
                    Rectangle::new(
                        [corner, (corner.0 + dx, corner.1 + dy)],
                        shade(field.values[r * field.columns + c]).filled(),
                    )
                })
            }))
            .map_err(|e| e.to_string())?;
        let mut has_legend = false;
        for set in scatter {
            let (r, g, b) = set.color;
            let color = RGBColor(r, g, b);
            let inside = set
                .points
                .iter()
                .filter(|(x, y)| (x0..=x1).contains(x) && (y0..=y1).contains(y));
            let annotation = chart
                .draw_series(inside.map(|&p| Circle::new(p, 2, color.filled())))
                .map_err(|e| e.to_string())?;
            if !set.name.is_empty() {
                has_legend = true;
                annotation
                    .label(set.name.as_str())
                    .legend(move |(x, y)| Circle::new((x + 10, y), 4, color.filled()));
            }
        }
        if has_legend {
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::UpperRight)
                .label_font(("sans-serif", 13))
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK)
                .draw()
                .map_err(|e| e.to_string())?;
        }
        Ok(())
    })
}

/// A bar chart, one bar per label, as an RGB PNG of `size` (width, height) pixels.
///
/// Bars grow from 0, so the value axis always includes 0; non-finite values get no bar but keep
/// their label. Errors if `labels` and `values` differ in length or are empty, if `size` is too
/// small to hold the chart's text, or if plotters fails to draw.
pub fn bar_chart(title: &str, labels: &[String], values: &[f64], size: (u32, u32)) -> Result<Vec<u8>, String> {
    if labels.len() != values.len() {
        return Err(format!(
            "bar_chart: {} labels for {} values",
            labels.len(),
            values.len()
        ));
    }
    if labels.is_empty() {
        return Err("bar_chart: no bars to draw".to_string());
    }
    let finite = || values.iter().copied().filter(|v| v.is_finite());
    // Bars grow from a zero baseline, so the margin goes only on the side(s) bars reach out to.
    let low = finite().fold(0.0, f64::min);
    let high = finite().fold(0.0, f64::max);
    let margin = (high - low) * 0.05;
    if !margin.is_finite() {
        return Err(format!(
            "bar_chart: values from {low} to {high} span too wide a range to plot"
        ));
    }
    let y_range = if low == high {
        (0.0, 1.0)
    } else {
        (
            if low < 0.0 { low - margin } else { 0.0 },
            if high > 0.0 { high + margin } else { 0.0 },
        )
    };
    // Bar i is centred on x = i, so plotters' ticks, which land on whole numbers once there are
    // as many as bars, fall on the bars. (plotters' segmented coordinates, meant for this, map a
    // single segment to a sliver at the left edge and add an empty segment after the last.)
    let x_range = (-0.5, labels.len() as f64 - 0.5);
    let label_of = |&x: &f64| {
        let index = x.round();
        let is_bar_centre = (x - index).abs() < 1e-6 && index >= 0.0;
        let label = if is_bar_centre {
            labels.get(index as usize)
        } else {
            None
        };
        label.cloned().unwrap_or_default()
    };
    // Thin the labels to one per so many bars when the longest would collide with its neighbours.
    let widest_label = labels.iter().map(|l| l.chars().count()).max().unwrap_or(0);
    let label_capacity = (size.0 as usize).saturating_sub(100) / (8 * widest_label + 12);

    render_chart(size, |root| {
        let mut chart = ChartBuilder::on(root)
            .caption(title, ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(70)
            .build_cartesian_2d(x_range.0..x_range.1, y_range.0..y_range.1)
            .map_err(|e| e.to_string())?;
        let (_, y_ticks) = tick_counts(size);
        let y_tick_label = tick_label_formatter(y_range, y_ticks);
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(labels.len().min(label_capacity).max(1))
            .x_label_formatter(&label_of)
            .y_labels(y_ticks)
            .y_label_formatter(&y_tick_label)
            .label_style(("sans-serif", 13))
            .light_line_style(RGBColor(240, 240, 240))
            .draw()
            .map_err(|e| e.to_string())?;
        let bar_color = RGBColor(70, 130, 180);
        chart
            .draw_series(values.iter().enumerate().filter(|(_, v)| v.is_finite()).map(|(i, &v)| {
                let centre = i as f64;
                Rectangle::new([(centre - 0.4, 0.0), (centre + 0.4, v)], bar_color.filled())
            }))
            .map_err(|e| e.to_string())?;
        Ok(())
    })
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
fn tick_counts(size: (u32, u32)) -> (usize, usize) {
    ((size.0 as usize / 80).clamp(3, 10), (size.1 as usize / 40).clamp(3, 10))
}

/// Tick labels for an axis over `range` with at most `max_ticks` labels, all with the decimals
/// their spacing needs: plotters' own labels for f64 always show one decimal, so they read
/// "1000.0" for large values and "0.0" for every tick of an axis spanning 1e-5.
fn tick_label_formatter(range: (f64, f64), max_ticks: usize) -> impl Fn(&f64) -> String {
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
fn render_chart(
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
    use std::io::Cursor;

    /// Decode a PNG into (width, height, colour type, pixels).
    fn decode(png_bytes: &[u8]) -> (u32, u32, png::ColorType, Vec<u8>) {
        let mut reader = png::Decoder::new(Cursor::new(png_bytes))
            .read_info()
            .expect("a valid PNG header");
        let mut pixels = vec![0; reader.output_buffer_size().expect("a sane image size")];
        let info = reader.next_frame(&mut pixels).expect("valid PNG data");
        assert_eq!(info.bit_depth, png::BitDepth::Eight);
        pixels.truncate(info.buffer_size());
        (info.width, info.height, info.color_type, pixels)
    }

    fn distinct_colors(rgb: &[u8]) -> usize {
        let mut colors: Vec<&[u8]> = rgb.chunks_exact(3).collect();
        colors.sort_unstable();
        colors.dedup();
        colors.len()
    }

    fn count_color(rgb: &[u8], color: (u8, u8, u8)) -> usize {
        rgb.chunks_exact(3).filter(|p| (p[0], p[1], p[2]) == color).count()
    }

    fn images(values: Vec<f32>, shape: [usize; 4]) -> Tensor {
        Tensor::from_vec(values, &shape).unwrap()
    }

    #[test]
    fn encode_png_round_trips_gray_and_rgb() {
        let gray: Vec<u8> = (0..6).map(|i| i * 40).collect();
        assert_eq!(
            decode(&encode_png(3, 2, ColorKind::Gray, &gray)),
            (3, 2, png::ColorType::Grayscale, gray)
        );

        let rgb: Vec<u8> = (0..24).map(|i| i * 10).collect();
        assert_eq!(
            decode(&encode_png(2, 4, ColorKind::Rgb, &rgb)),
            (2, 4, png::ColorType::Rgb, rgb)
        );
    }

    #[test]
    #[should_panic(expected = "buffer size")]
    #[cfg(debug_assertions)]
    fn encode_png_rejects_a_short_buffer() {
        encode_png(3, 3, ColorKind::Rgb, &[0; 9]);
    }

    #[test]
    fn sample_grid_places_images_between_separators() {
        // Image 0 all ones (white), image 1 all zeros (black); 2x3 pixels each, scaled by 2.
        let mut values = vec![1.0f32; 6];
        values.extend([0.0; 6]);
        let (width, height, color, pixels) = decode(&sample_grid(&images(values, [2, 1, 2, 3]), (0.0, 1.0), 2, 2));
        assert_eq!(color, png::ColorType::Grayscale);
        // Two 6-pixel-wide cells and three 2-pixel separators; one 4-pixel-high row and two.
        assert_eq!((width, height), (2 * 6 + 3 * 2, 4 + 2 * 2));
        let at = |x: usize, y: usize| pixels[y * width as usize + x];
        for y in 0..height as usize {
            for x in 0..width as usize {
                let expected = match (x, y) {
                    (2..=7, 2..=5) => 255,
                    (10..=15, 2..=5) => 0,
                    _ => SEPARATOR_GRAY,
                };
                assert_eq!(at(x, y), expected, "pixel ({x}, {y})");
            }
        }
    }

    #[test]
    fn sample_grid_maps_the_range_clamps_and_scales_by_nearest_neighbour() {
        // One 2x2 image in (-1, 1): -1 -> 0, 0 -> 128 (127.5 rounded), 5 clamps to 255, -3 to 0.
        let tensor = images(vec![-1.0, 0.0, 5.0, -3.0], [1, 1, 2, 2]);
        let (width, height, _, pixels) = decode(&sample_grid(&tensor, (-1.0, 1.0), 8, 3));
        // `columns` is capped at the one image.
        assert_eq!((width, height), (6 + 4, 6 + 4));
        let at = |x: usize, y: usize| pixels[y * width as usize + x];
        for (y, x, expected) in [(0, 0, 0), (0, 1, 128), (1, 0, 255), (1, 1, 0)] {
            for dy in 0..3 {
                for dx in 0..3 {
                    assert_eq!(at(2 + 3 * x + dx, 2 + 3 * y + dy), expected, "source pixel ({x}, {y})");
                }
            }
        }
    }

    #[test]
    fn sample_grid_fills_unused_cells_of_the_last_row_with_gray() {
        let tensor = images(vec![0.0; 3], [3, 1, 1, 1]);
        let (width, height, _, pixels) = decode(&sample_grid(&tensor, (0.0, 1.0), 2, 1));
        assert_eq!((width, height), (2 + 3 * 2, 2 + 3 * 2));
        let at = |x: usize, y: usize| pixels[y * width as usize + x];
        assert_eq!([at(2, 2), at(5, 2), at(2, 5)], [0, 0, 0]);
        assert_eq!(at(5, 5), SEPARATOR_GRAY);
    }

    #[test]
    fn sample_grid_of_no_images_or_empty_images_is_just_the_frame() {
        let (width, height, _, pixels) = decode(&sample_grid(&images(vec![], [0, 1, 2, 3]), (0.0, 1.0), 4, 2));
        assert_eq!((width, height), (6 + 2 * 2, 2));
        assert!(pixels.iter().all(|&p| p == SEPARATOR_GRAY));

        let (width, height, _, pixels) = decode(&sample_grid(&images(vec![], [3, 1, 0, 2]), (0.0, 1.0), 3, 1));
        assert_eq!((width, height), (3 * 2 + 4 * 2, 2 * 2));
        assert!(pixels.iter().all(|&p| p == SEPARATOR_GRAY));
    }

    #[test]
    #[should_panic(expected = "expected images of shape [N, 1, H, W], got [4, 28, 28]")]
    fn sample_grid_rejects_a_rank_3_tensor() {
        sample_grid(
            &Tensor::zeros(&[4, 28, 28], earthmover_tensor::DType::F32),
            (0.0, 1.0),
            2,
            1,
        );
    }

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

    fn series(name: &str, points: Vec<(f64, f64)>, color: (u8, u8, u8)) -> Series {
        Series {
            name: name.to_string(),
            points,
            color,
        }
    }

    /// Decode a chart, checking its size and colour type, and return its RGB pixels.
    fn decode_chart(png_bytes: &[u8], size: (u32, u32)) -> Vec<u8> {
        let (width, height, color, pixels) = decode(png_bytes);
        assert_eq!((width, height, color), (size.0, size.1, png::ColorType::Rgb));
        pixels
    }

    const RED: (u8, u8, u8) = (220, 20, 20);
    const BLUE: (u8, u8, u8) = (20, 60, 220);

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
        assert!(bar_chart("t", &["a".to_string()], &[1.0], (400, 20)).is_err());
    }

    fn digit_labels() -> Vec<String> {
        (0..10).map(|d| d.to_string()).collect()
    }

    /// The colour of bar_chart's bars.
    const BAR: (u8, u8, u8) = (70, 130, 180);

    #[test]
    fn bar_chart_draws_bars_proportional_to_values() {
        let pixels = decode_chart(
            &bar_chart("classes", &digit_labels(), &[1.0; 10], (500, 300)).unwrap(),
            (500, 300),
        );
        let equal_bars = count_color(&pixels, BAR);
        assert!(equal_bars > 1000);
        assert!(distinct_colors(&pixels) > 20);

        // Halving nine of ten bars (against the same axis top) about halves the bar area.
        let mut values = [0.5; 10];
        values[0] = 1.0;
        let pixels = decode_chart(
            &bar_chart("classes", &digit_labels(), &values, (500, 300)).unwrap(),
            (500, 300),
        );
        let ratio = count_color(&pixels, BAR) as f64 / equal_bars as f64;
        assert!((0.5..0.6).contains(&ratio), "bar area ratio {ratio}");
    }

    #[test]
    fn bar_chart_handles_single_constant_zero_and_non_finite_values() {
        let one = bar_chart("one", &["only".to_string()], &[42.0], (300, 200)).unwrap();
        assert!(count_color(&decode_chart(&one, (300, 200)), BAR) > 100);

        let zeros = bar_chart("zeros", &digit_labels(), &[0.0; 10], (300, 200)).unwrap();
        let pixels = decode_chart(&zeros, (300, 200));
        assert_eq!(count_color(&pixels, BAR), 0);
        assert!(distinct_colors(&pixels) > 2);

        let mut values = [3.0; 10];
        values[4] = f64::NAN;
        let with_nan = bar_chart("nan", &digit_labels(), &values, (300, 200)).unwrap();
        assert!(count_color(&decode_chart(&with_nan, (300, 200)), BAR) > 100);
    }

    #[test]
    fn bar_chart_rejects_mismatched_or_empty_input() {
        assert!(bar_chart("t", &digit_labels(), &[1.0; 9], (300, 200)).is_err());
        assert!(bar_chart("t", &[], &[], (300, 200)).is_err());
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

    #[test]
    fn field_plot_shades_high_values_dark_and_draws_points_on_top() {
        // A field rising from left to right: its left edge is the white lowest band, its right
        // edge the darkest.
        let field = Field {
            x_range: (-1.0, 1.0),
            y_range: (-1.0, 1.0),
            values: (0..20 * 30).map(|i| (i % 30) as f64).collect(),
            rows: 20,
            columns: 30,
            levels: 10,
        };
        let plot = field_plot(
            "f",
            "x",
            "y",
            &field,
            &[series("pts", vec![(0.5, 0.5); 3], RED)],
            (400, 400),
        )
        .unwrap();
        let pixels = decode_chart(&plot, (400, 400));
        assert!(count_color(&pixels, (20, 110, 60)) > 500, "the top band is drawn");
        assert!(count_color(&pixels, RED) > 5, "the points are drawn");
        let bad = Field {
            values: vec![0.0; 5],
            ..field
        };
        assert!(field_plot("f", "x", "y", &bad, &[], (400, 400)).is_err());
    }
}
