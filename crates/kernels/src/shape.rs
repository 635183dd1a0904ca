//! Shape arithmetic shared by every backend.

/// Number of elements of a shape (1 for a scalar's empty shape). Panics, naming the shape,
/// when the count does not fit a `usize`: it must never wrap around to a small number.
#[track_caller]
pub fn numel(shape: &[usize]) -> usize {
    checked_numel(shape).unwrap_or_else(|| panic!("shape {shape:?} has more elements than a usize can count"))
}

/// Number of elements of a shape, or `None` when it does not fit a `usize`.
pub fn checked_numel(shape: &[usize]) -> Option<usize> {
    shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d))
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
    /// conv2d's geometry for an input `[N, C, H, W]` and a weight `[O, C, kh, kw]`, or an
    /// error naming the op, the shapes and the parameters: channels that differ, a stride,
    /// dilation or kernel size of 0, a kernel wider than the padded input, or sizes whose
    /// arithmetic would overflow. Empty batches and channels are fine (PyTorch's rules).
    pub fn conv2d(
        input: [usize; 4],
        weight: [usize; 4],
        stride: (usize, usize),
        padding: (usize, usize),
        dilation: (usize, usize),
    ) -> Result<ConvGeometry, String> {
        let ([n, c, h, w], [o, wc, kh, kw]) = (input, weight);
        let what = || {
            format!(
                "conv2d of input {input:?} with weight {weight:?} (stride {stride:?}, padding {padding:?}, \
                 dilation {dilation:?})"
            )
        };
        if c != wc {
            return Err(format!(
                "{}: the input has {c} channels, the weight expects {wc}",
                what()
            ));
        }
        check_positive(kh, kw, stride, dilation).map_err(|e| format!("{}: {e}", what()))?;
        let out = |i, k, s, p, d, axis| {
            Self::conv_out_size(i, k, s, p, d).ok_or_else(|| {
                format!(
                    "{}: the kernel's {axis} with its dilation is larger than the padded input's",
                    what()
                )
            })
        };
        Ok(ConvGeometry {
            batch: n,
            in_channels: c,
            out_channels: o,
            in_h: h,
            in_w: w,
            kernel_h: kh,
            kernel_w: kw,
            stride,
            padding,
            dilation,
            out_h: out(h, kh, stride.0, padding.0, dilation.0, "height")?,
            out_w: out(w, kw, stride.1, padding.1, dilation.1, "width")?,
        })
    }

    /// conv_transpose2d's geometry for an input `[N, Cin, H, W]` and a weight `[Cin, Cout, kh,
    /// kw]` (PyTorch's layouts), in conv2d's terms (the conv whose input adjoint it is: its
    /// output grid is this input), or an error naming the op, the shapes and the parameters:
    /// as [`ConvGeometry::conv2d`], plus an input of height or width 0 (only the batch and
    /// channels may be empty, as in PyTorch), an `output_padding` not smaller than the stride
    /// or the dilation, and a padding that leaves no output.
    pub fn conv_transpose2d(
        input: [usize; 4],
        weight: [usize; 4],
        stride: (usize, usize),
        padding: (usize, usize),
        output_padding: (usize, usize),
        dilation: (usize, usize),
    ) -> Result<ConvGeometry, String> {
        let ([n, cin, h, w], [wcin, cout, kh, kw]) = (input, weight);
        let what = || {
            format!(
                "conv_transpose2d of input {input:?} with weight {weight:?} (stride {stride:?}, padding \
                 {padding:?}, output_padding {output_padding:?}, dilation {dilation:?})"
            )
        };
        if cin != wcin {
            return Err(format!(
                "{}: the input has {cin} channels, the weight expects {wcin}",
                what()
            ));
        }
        check_positive(kh, kw, stride, dilation).map_err(|e| format!("{}: {e}", what()))?;
        if h == 0 || w == 0 {
            return Err(format!(
                "{}: the input's height and width must be at least 1 (only the batch and channels may be empty)",
                what()
            ));
        }
        let (s, d, op) = (stride, dilation, output_padding);
        if op.0 >= s.0.max(d.0) || op.1 >= s.1.max(d.1) {
            return Err(format!(
                "{}: output_padding must be smaller than the stride or the dilation",
                what()
            ));
        }
        let out = |i, k, s, p, op, d, axis| {
            Self::conv_transpose_out_size(i, k, s, p, op, d)
                .ok_or_else(|| format!("{}: the padding leaves an output {axis} of 0 or less", what()))
        };
        Ok(ConvGeometry {
            batch: n,
            in_channels: cout,
            out_channels: cin,
            in_h: out(h, kh, s.0, padding.0, op.0, d.0, "height")?,
            in_w: out(w, kw, s.1, padding.1, op.1, d.1, "width")?,
            kernel_h: kh,
            kernel_w: kw,
            stride,
            padding,
            dilation,
            out_h: h,
            out_w: w,
        })
    }

    /// Output size of a convolution along one axis, or `None` when the kernel does not fit
    /// the padded input, the stride, kernel or dilation is 0, or the arithmetic overflows.
    pub fn conv_out_size(input: usize, kernel: usize, stride: usize, padding: usize, dilation: usize) -> Option<usize> {
        if stride == 0 || kernel == 0 || dilation == 0 {
            return None;
        }
        let span = dilation.checked_mul(kernel - 1)?.checked_add(1)?;
        let padded = padding.checked_mul(2)?.checked_add(input)?;
        Some(padded.checked_sub(span)? / stride + 1)
    }

    /// Output size of a transposed convolution along one axis, `(input - 1) * stride - 2 *
    /// padding + dilation * (kernel - 1) + output_padding + 1`, or `None` when it is 0 or
    /// less, the input, stride, kernel or dilation is 0, or the arithmetic overflows.
    pub fn conv_transpose_out_size(
        input: usize,
        kernel: usize,
        stride: usize,
        padding: usize,
        output_padding: usize,
        dilation: usize,
    ) -> Option<usize> {
        if input == 0 || stride == 0 || kernel == 0 || dilation == 0 {
            return None;
        }
        let full = (input - 1)
            .checked_mul(stride)?
            .checked_add(dilation.checked_mul(kernel - 1)?)?
            .checked_add(output_padding)?
            .checked_add(1)?;
        full.checked_sub(padding.checked_mul(2)?).filter(|&s| s > 0)
    }

    /// Whether the fields agree: a positive kernel, stride and dilation, and an output no larger
    /// than conv2d's arithmetic gives for the input (smaller where a transposed convolution's
    /// `output_padding` adds input rows that no output reaches). The kernels check it at their
    /// entry, so that a geometry built by hand fails there with its fields, not deep inside.
    pub fn check(&self) -> Result<(), String> {
        let out_h = Self::conv_out_size(self.in_h, self.kernel_h, self.stride.0, self.padding.0, self.dilation.0);
        let out_w = Self::conv_out_size(self.in_w, self.kernel_w, self.stride.1, self.padding.1, self.dilation.1);
        match (out_h, out_w) {
            (Some(h), Some(w)) if self.out_h <= h && self.out_w <= w => Ok(()),
            _ => Err(format!("an inconsistent convolution geometry: {self:?}")),
        }
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

/// A kernel size, stride and dilation of 0 are errors, as in PyTorch.
fn check_positive(kh: usize, kw: usize, stride: (usize, usize), dilation: (usize, usize)) -> Result<(), String> {
    if kh == 0 || kw == 0 {
        return Err(format!("the kernel size must be positive, got {kh} x {kw}"));
    }
    if stride.0 == 0 || stride.1 == 0 || dilation.0 == 0 || dilation.1 == 0 {
        return Err("the stride and the dilation must be positive".to_string());
    }
    Ok(())
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
    fn element_counts_never_wrap() {
        assert_eq!(checked_numel(&[3, 0, usize::MAX]), Some(0));
        assert_eq!(checked_numel(&[2, usize::MAX / 2 + 1]), None);
        assert_eq!(numel(&[]), 1);
        let message = std::panic::catch_unwind(|| numel(&[1 << 40, 1 << 40])).unwrap_err();
        assert!(message
            .downcast_ref::<String>()
            .unwrap()
            .contains("[1099511627776, 1099511627776]"));
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

    /// Each refusal is an error naming the op and its shapes; no size wraps around.
    #[test]
    fn bad_geometries_are_errors_that_say_what_and_why() {
        let conv = |input, weight, s| ConvGeometry::conv2d(input, weight, (s, s), (0, 0), (1, 1));
        let error = conv([1, 2, 5, 5], [3, 2, 0, 3], 1).unwrap_err();
        assert!(
            error.contains("conv2d of input [1, 2, 5, 5] with weight [3, 2, 0, 3]"),
            "{error}"
        );
        assert!(error.contains("kernel size must be positive"), "{error}");
        assert!(conv([1, 2, 5, 5], [3, 2, 3, 3], 0).unwrap_err().contains("stride"));
        assert!(conv([1, 2, 5, 5], [3, 4, 3, 3], 1).unwrap_err().contains("4"));
        assert!(conv([1, 2, 2, 2], [3, 2, 3, 3], 1)
            .unwrap_err()
            .contains("larger than the padded input"));
        // Empty batches and channels compute; zero-height input fits a kernel only with padding.
        assert_eq!(conv([0, 2, 5, 5], [3, 2, 3, 3], 1).unwrap().out_h, 3);
        assert_eq!(conv([1, 0, 5, 5], [0, 0, 3, 3], 1).unwrap().out_w, 3);
        let padded = ConvGeometry::conv2d([1, 2, 0, 5], [3, 2, 3, 3], (1, 1), (2, 2), (1, 1)).unwrap();
        assert_eq!((padded.out_h, padded.out_w), (2, 7));
        // A transposed convolution of a height-0 input: an error, not `(0 - 1) * stride`.
        let t = |input, padding| ConvGeometry::conv_transpose2d(input, [2, 3, 3, 3], (2, 2), padding, (0, 0), (1, 1));
        assert!(t([1, 2, 0, 5], (0, 0))
            .unwrap_err()
            .contains("height and width must be at least 1"));
        assert!(t([1, 2, 2, 2], (3, 3))
            .unwrap_err()
            .contains("output height of 0 or less"));
        assert_eq!(t([0, 2, 4, 4], (1, 1)).unwrap().in_h, 7);
        // Sizes whose arithmetic would overflow are refused.
        assert_eq!(ConvGeometry::conv_out_size(usize::MAX, 3, 1, usize::MAX / 2, 1), None);
        assert_eq!(ConvGeometry::conv_transpose_out_size(usize::MAX, 3, 2, 0, 0, 1), None);
        // A geometry built by hand that does not add up is caught by `check`.
        let mut g = conv([1, 2, 5, 5], [3, 2, 3, 3], 1).unwrap();
        assert!(g.check().is_ok());
        g.out_h = 4;
        assert!(g.check().is_err());
    }
}
