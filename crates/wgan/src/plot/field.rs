//! A scalar field as filled contours with points on top: a critic's values over the plane
//! with real and generated samples.

use super::chart::{draw_legend, render_chart, tick_counts, tick_label_formatter};
use super::Series;
use plotters::prelude::*;

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
            draw_legend(&mut chart)?;
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plot::testing::{count_color, decode_chart, series, RED};

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
        assert!(
            field_plot("f", "x", "y", &field, &[], (400, 20)).is_err(),
            "too small for its text"
        );
        let bad = Field {
            values: vec![0.0; 5],
            ..field
        };
        assert!(field_plot("f", "x", "y", &bad, &[], (400, 400)).is_err());
    }
}
