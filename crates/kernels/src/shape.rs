//! Shape arithmetic shared by every backend.

/// Number of elements of a shape (1 for a scalar's empty shape).
pub fn numel(shape: &[usize]) -> usize {
    shape.iter().product()
}

/// Row-major strides of a contiguous tensor of `shape`.
pub fn contiguous_strides(shape: &[usize]) -> Vec<usize> {
    let mut strides = vec![1; shape.len()];
    for d in (0..shape.len().saturating_sub(1)).rev() {
        strides[d] = strides[d + 1] * shape[d + 1];
    }
    strides
}

/// NumPy broadcasting: align the shapes on the right; each pair of dims must be equal or 1.
/// Returns `None` when they are incompatible.
pub fn broadcast_shapes(a: &[usize], b: &[usize]) -> Option<Vec<usize>> {
    let rank = a.len().max(b.len());
    let mut out = vec![0; rank];
    for i in 0..rank {
        let da = if i + a.len() >= rank { a[i + a.len() - rank] } else { 1 };
        let db = if i + b.len() >= rank { b[i + b.len() - rank] } else { 1 };
        out[i] = match (da, db) {
            (x, y) if x == y => x,
            (1, y) => y,
            (x, 1) => x,
            _ => return None,
        };
    }
    Some(out)
}

/// Strides with which to read a tensor of `shape` as if it had the (broadcast) shape `target`:
/// broadcast dims get stride 0.
pub fn broadcast_strides(shape: &[usize], target: &[usize]) -> Vec<usize> {
    let own = contiguous_strides(shape);
    let offset = target.len() - shape.len();
    (0..target.len())
        .map(|d| {
            if d < offset || shape[d - offset] == 1 {
                0
            } else {
                own[d - offset]
            }
        })
        .collect()
}

/// The geometry of a 2-D convolution, in PyTorch's terms. For `conv2d`, `in_h x in_w` is the
/// input image and `out_h x out_w` the output map; `conv_transpose2d` uses the same geometry
/// the other way round (its input is the conv's output grid).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvGeometry {
    pub batch: usize,
    pub in_channels: usize,
    pub out_channels: usize,
    pub in_h: usize,
    pub in_w: usize,
    pub kernel_h: usize,
    pub kernel_w: usize,
    pub stride: (usize, usize),
    pub padding: (usize, usize),
    pub dilation: (usize, usize),
    pub out_h: usize,
    pub out_w: usize,
}

impl ConvGeometry {
    /// Output size of a convolution along one axis, or `None` when the kernel does not fit.
    pub fn conv_out_size(input: usize, kernel: usize, stride: usize, padding: usize, dilation: usize) -> Option<usize> {
        let span = dilation * (kernel - 1) + 1;
        let padded = input + 2 * padding;
        if padded < span || stride == 0 {
            return None;
        }
        Some((padded - span) / stride + 1)
    }

    /// Output size of a transposed convolution along one axis, or `None` when it would be empty.
    pub fn conv_transpose_out_size(
        input: usize,
        kernel: usize,
        stride: usize,
        padding: usize,
        output_padding: usize,
        dilation: usize,
    ) -> Option<usize> {
        let full = (input - 1) * stride + dilation * (kernel - 1) + output_padding + 1;
        full.checked_sub(2 * padding).filter(|&s| s > 0)
    }

    /// Rows of the im2col matrix: one per (input channel, kernel row, kernel column).
    pub fn patch_len(&self) -> usize {
        self.in_channels * self.kernel_h * self.kernel_w
    }

    /// Floating-point operations of the forward pass (2 per multiply-add).
    pub fn forward_flops(&self) -> f64 {
        2.0 * (self.batch * self.out_channels * self.out_h * self.out_w * self.patch_len()) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broadcasting_follows_numpy() {
        assert_eq!(broadcast_shapes(&[3, 1, 5], &[4, 1]), Some(vec![3, 4, 5]));
        assert_eq!(broadcast_shapes(&[], &[2, 3]), Some(vec![2, 3]));
        assert_eq!(broadcast_shapes(&[2, 3], &[3, 2]), None);
        assert_eq!(broadcast_strides(&[4, 1], &[3, 4, 5]), vec![0, 1, 0]);
    }

    #[test]
    fn conv_sizes_match_pytorch() {
        // The reference critic: 28 -> 14 -> 7 -> 4 with k5 s2 p2.
        assert_eq!(ConvGeometry::conv_out_size(28, 5, 2, 2, 1), Some(14));
        assert_eq!(ConvGeometry::conv_out_size(14, 5, 2, 2, 1), Some(7));
        assert_eq!(ConvGeometry::conv_out_size(7, 5, 2, 2, 1), Some(4));
        // The reference generator: 4 -> 8 (output_padding 1), 7 -> 14, 14 -> 28.
        assert_eq!(ConvGeometry::conv_transpose_out_size(4, 5, 2, 2, 1, 1), Some(8));
        assert_eq!(ConvGeometry::conv_transpose_out_size(7, 5, 2, 2, 1, 1), Some(14));
        assert_eq!(ConvGeometry::conv_out_size(3, 5, 1, 0, 1), None);
    }
}
