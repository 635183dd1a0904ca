//! The pictures a GAN user looks at: grids of generated samples ([`sample_grid`]), line charts
//! of losses and metrics ([`line_plot`], [`panels`]) and a critic's values over the plane
//! ([`field_plot`]).
//!
//! Everything is returned as PNG bytes in memory so that callers decide where (and how
//! atomically) files get written. Charts are drawn with plotters into an RGB buffer; their text
//! uses the DejaVu Sans font compiled into the binary, so no system fonts or fontconfig are needed.
//!
//! - `image`: PNG encoding and the sample grid;
//! - `chart`: line charts and what every chart shares (axes, tick labels, the canvas, the font);
//! - `field`: filled contours of a scalar field with points on top.

mod chart;
mod field;
mod image;

pub use chart::{line_plot, median_filter, panels, Panel, Series, CLASS_COLORS};
pub use field::{field_plot, Field, Scatter};
pub use image::{encode_png, sample_grid, ColorKind, SEPARATOR_GRAY, SEPARATOR_WIDTH};

/// What the tests of every kind of picture read back.
#[cfg(test)]
mod testing {
    use super::Series;
    use std::io::Cursor;

    /// Decode a PNG into (width, height, colour type, pixels).
    pub fn decode(png_bytes: &[u8]) -> (u32, u32, png::ColorType, Vec<u8>) {
        let mut reader = png::Decoder::new(Cursor::new(png_bytes))
            .read_info()
            .expect("a valid PNG header");
        let mut pixels = vec![0; reader.output_buffer_size().expect("a sane image size")];
        let info = reader.next_frame(&mut pixels).expect("valid PNG data");
        assert_eq!(info.bit_depth, png::BitDepth::Eight);
        pixels.truncate(info.buffer_size());
        (info.width, info.height, info.color_type, pixels)
    }

    pub fn distinct_colors(rgb: &[u8]) -> usize {
        let mut colors: Vec<&[u8]> = rgb.chunks_exact(3).collect();
        colors.sort_unstable();
        colors.dedup();
        colors.len()
    }

    pub fn count_color(rgb: &[u8], color: (u8, u8, u8)) -> usize {
        rgb.chunks_exact(3).filter(|p| (p[0], p[1], p[2]) == color).count()
    }

    pub fn series(name: &str, points: Vec<(f64, f64)>, color: (u8, u8, u8)) -> Series {
        Series {
            name: name.to_string(),
            points,
            color,
        }
    }

    /// Decode a chart, checking its size and colour type, and return its RGB pixels.
    pub fn decode_chart(png_bytes: &[u8], size: (u32, u32)) -> Vec<u8> {
        let (width, height, color, pixels) = decode(png_bytes);
        assert_eq!((width, height, color), (size.0, size.1, png::ColorType::Rgb));
        pixels
    }

    pub const RED: (u8, u8, u8) = (220, 20, 20);
    pub const BLUE: (u8, u8, u8) = (20, 60, 220);
}
