//! PNG encoding, and the grid of generated samples.

use earthmover_tensor::Tensor;

/// The gray of the lines between (and around) the images of a [`sample_grid`], and of its unused
/// cells: dark enough not to be mistaken for a digit's stroke, light enough to tell from the
/// black background of an image.
pub const SEPARATOR_GRAY: u8 = 64;

/// The width in pixels of the separator lines of a [`sample_grid`].
pub const SEPARATOR_WIDTH: usize = 2;

/// The pixel layout of the buffer handed to [`encode_png`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ColorKind {
    /// One byte per pixel.
    Gray,
    /// Three bytes per pixel: red, green, blue.
    Rgb,
}

impl ColorKind {
    pub(super) fn bytes_per_pixel(self) -> usize {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plot::testing::decode;

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
}
