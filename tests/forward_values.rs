//! Forward values of the ops whose index arithmetic is easiest to get wrong: conv2d,
//! conv_transpose2d and matmul, against small cases computed by hand, then against direct
//! loop implementations of their definitions over a grid of options. Finite differences only
//! check that a backward rule matches its forward pass; these check the forward pass itself.

use earthmover_tensor::{grad, ConvOptions, DType, Tensor};

/// A tensor of hand-written values (f64, so that comparisons are exact or near exact).
fn tensor(values: &[f64], shape: &[usize]) -> Tensor {
    Tensor::from_vec(values.to_vec(), shape).unwrap()
}

fn randn(shape: &[usize], seed: u64) -> Tensor {
    Tensor::randn(shape, DType::F64, seed)
}

/// Elementwise equality within `tol`, with both vectors in the message.
#[track_caller]
fn assert_close(got: &[f64], want: &[f64], tol: f64, what: &str) {
    assert_eq!(
        got.len(),
        want.len(),
        "{what}: {} values, expected {}",
        got.len(),
        want.len()
    );
    let worst = got.iter().zip(want).map(|(g, w)| (g - w).abs()).fold(0.0, f64::max);
    assert!(worst <= tol, "{what}: off by {worst:e}\n got  {got:?}\n want {want:?}");
}

fn dot(a: &Tensor, b: &Tensor) -> f64 {
    a.mul(b).sum().item()
}

// ---------------------------------------------------------------- conv2d by hand

/// The 3x3 image 1..9 as `[1, 1, 3, 3]`.
fn one_to_nine() -> Tensor {
    tensor(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0], &[1, 1, 3, 3])
}

#[test]
fn conv2d_stride_1_matches_hand_computation() {
    // Kernel [[1, 2], [3, 4]] slid over 1..9: out(0, 0) = 1*1 + 2*2 + 4*3 + 5*4 = 37, etc.
    let w = tensor(&[1.0, 2.0, 3.0, 4.0], &[1, 1, 2, 2]);
    let y = one_to_nine().conv2d(&w, None, ConvOptions::default());
    assert_eq!(y.shape(), &[1, 1, 2, 2]);
    assert_eq!(y.to_vec_f64(), vec![37.0, 47.0, 67.0, 77.0]);
}

#[test]
fn conv2d_stride_2_padding_1_dilation_2_matches_hand_computation() {
    // Padded by 1 the image is 5x5 with 1..9 in the middle; the dilated 2x2 kernel spans 3x3
    // and reads the corners of each 3x3 window at rows and columns {0, 2} and {2, 4}. Every
    // window's only non-padding corner is the centre pixel 5, under a different kernel entry:
    // (0, 0) under w[1][1] = 4, (0, 1) under w[1][0] = 3, (1, 0) under w[0][1] = 2, (1, 1)
    // under w[0][0] = 1.
    let w = tensor(&[1.0, 2.0, 3.0, 4.0], &[1, 1, 2, 2]);
    let opts = ConvOptions::new().stride(2).padding(1).dilation(2);
    let y = one_to_nine().conv2d(&w, None, opts);
    assert_eq!(y.shape(), &[1, 1, 2, 2]);
    assert_eq!(y.to_vec_f64(), vec![20.0, 15.0, 10.0, 5.0]);
    // The bias is added to every output pixel of its channel.
    let b = tensor(&[0.25], &[1]);
    let y = one_to_nine().conv2d(&w, Some(&b), opts);
    assert_eq!(y.to_vec_f64(), vec![20.25, 15.25, 10.25, 5.25]);
}

#[test]
fn conv2d_sums_over_input_channels_and_separates_output_channels() {
    // Two 2x2 input channels, two output channels, each kernel covering the whole image:
    // out[o] = sum_c <x[c], w[o][c]> + b[o].
    let x = tensor(&[1.0, 2.0, 3.0, 4.0, 0.0, 1.0, 1.0, 0.0], &[1, 2, 2, 2]);
    #[rustfmt::skip]
    let w = tensor(&[
        1.0, 0.0, 0.0, 1.0, /* o0 c0 */ 2.0, 2.0, 2.0, 2.0, /* o0 c1 */
        0.0, 1.0, 0.0, 0.0, /* o1 c0 */ 0.0, 0.0, 0.0, -1.0, /* o1 c1 */
    ], &[2, 2, 2, 2]);
    let b = tensor(&[0.5, -1.0], &[2]);
    let y = x.conv2d(&w, Some(&b), ConvOptions::default());
    assert_eq!(y.shape(), &[1, 2, 1, 1]);
    // o0: (1 + 4) + 2 * (0 + 1 + 1 + 0) + 0.5; o1: 2 + 0 - 1.
    assert_eq!(y.to_vec_f64(), vec![9.5, 1.0]);
}

// ---------------------------------------------------------------- conv_transpose2d by hand

#[test]
fn conv_transpose2d_stride_2_output_padding_1_matches_hand_computation() {
    // Each input pixel (i, j) scatters x[i][j] * w into the output at (2i + a, 2j + b); with
    // a 2x2 kernel and stride 2 the copies tile the output without overlap. Output padding 1
    // adds a last row and column that no input reaches: only the bias lands there.
    let x = tensor(&[1.0, 2.0, 3.0, 4.0], &[1, 1, 2, 2]);
    let w = tensor(&[1.0, 10.0, 100.0, 1000.0], &[1, 1, 2, 2]);
    let opts = ConvOptions::new().stride(2).output_padding(1);
    let y = x.conv_transpose2d(&w, None, opts);
    assert_eq!(y.shape(), &[1, 1, 5, 5]);
    #[rustfmt::skip]
    let want = [
        1.0,   10.0,   2.0,   20.0,   0.0,
        100.0, 1000.0, 200.0, 2000.0, 0.0,
        3.0,   30.0,   4.0,   40.0,   0.0,
        300.0, 3000.0, 400.0, 4000.0, 0.0,
        0.0,   0.0,    0.0,   0.0,    0.0,
    ];
    assert_eq!(y.to_vec_f64(), want);
    let b = tensor(&[0.5], &[1]);
    let y = x.conv_transpose2d(&w, Some(&b), opts);
    let with_bias: Vec<f64> = want.iter().map(|v| v + 0.5).collect();
    assert_eq!(y.to_vec_f64(), with_bias);
}

#[test]
fn conv_transpose2d_with_overlap_padding_and_output_padding_matches_hand_computation() {
    // x = [[1, 2], [3, 4]], w = 1..9 as 3x3, stride 2, padding 1, output padding 1: the
    // output is (2 - 1) * 2 - 2 * 1 + (3 - 1) + 1 + 1 = 4 wide. Input row i, kernel row a
    // land on output row 2i + a - 1: row 0 gets (i, a) = (0, 1); row 1 gets (0, 2) and
    // (1, 0), where the two inputs overlap; row 2 gets (1, 1); row 3 gets (1, 2), the row
    // that output padding keeps. Columns likewise. For example
    //   out[0][0] = x00 w11 = 5,
    //   out[0][1] = x00 w12 + x01 w10 = 6 + 8 = 14,
    //   out[1][1] = x00 w22 + x01 w20 + x10 w02 + x11 w00 = 9 + 14 + 9 + 4 = 36,
    //   out[3][3] = x11 w22 = 36.
    let x = tensor(&[1.0, 2.0, 3.0, 4.0], &[1, 1, 2, 2]);
    let w_values: Vec<f64> = (1..=9).map(f64::from).collect();
    let w = tensor(&w_values, &[1, 1, 3, 3]);
    let opts = ConvOptions::new().stride(2).padding(1).output_padding(1);
    let y = x.conv_transpose2d(&w, None, opts);
    assert_eq!(y.shape(), &[1, 1, 4, 4]);
    #[rustfmt::skip]
    let want = [
        5.0,  14.0, 10.0, 12.0,
        14.0, 36.0, 24.0, 30.0,
        15.0, 34.0, 20.0, 24.0,
        24.0, 55.0, 32.0, 36.0,
    ];
    assert_eq!(y.to_vec_f64(), want);
}

#[test]
fn conv_transpose2d_maps_input_channels_to_output_channels() {
    // Weight layout [in, out, kh, kw]: a 1x1 kernel mixes channels, out[o] = sum_i x[i] w[i][o].
    let x = tensor(&[1.0, 2.0, 10.0, 20.0], &[1, 2, 1, 2]);
    let w = tensor(&[1.0, 2.0, 3.0, 0.0, -1.0, 1.0], &[2, 3, 1, 1]);
    let y = x.conv_transpose2d(&w, None, ConvOptions::default());
    assert_eq!(y.shape(), &[1, 3, 1, 2]);
    // o0 = x0 + 0 x1; o1 = 2 x0 - x1; o2 = 3 x0 + x1.
    assert_eq!(y.to_vec_f64(), vec![1.0, 2.0, -8.0, -16.0, 13.0, 26.0]);
}

// ---------------------------------------------------------------- convs against their definitions

/// conv2d straight from its definition: `y[n][o][i][j] = b[o] + sum_{c, a, e} w[o][c][a][e] *
/// x[n][c][i s - p + a d][j s - p + e d]`, zero outside the image.
fn conv2d_reference(x: &Tensor, w: &Tensor, b: Option<&Tensor>, o: ConvOptions) -> Vec<f64> {
    let (xs, ws) = (x.shape(), w.shape());
    let (n, c, h, wd) = (xs[0], xs[1], xs[2], xs[3]);
    let (oc, kh, kw) = (ws[0], ws[2], ws[3]);
    let ho = (h + 2 * o.padding.0 - o.dilation.0 * (kh - 1) - 1) / o.stride.0 + 1;
    let wo = (wd + 2 * o.padding.1 - o.dilation.1 * (kw - 1) - 1) / o.stride.1 + 1;
    let (xv, wv) = (x.to_vec_f64(), w.to_vec_f64());
    let bv = b.map(|b| b.to_vec_f64()).unwrap_or_else(|| vec![0.0; oc]);
    let mut y = Vec::with_capacity(n * oc * ho * wo);
    for ni in 0..n {
        for oi in 0..oc {
            for i in 0..ho {
                for j in 0..wo {
                    let mut acc = bv[oi];
                    for ci in 0..c {
                        for a in 0..kh {
                            for e in 0..kw {
                                let r = (i * o.stride.0 + a * o.dilation.0) as isize - o.padding.0 as isize;
                                let q = (j * o.stride.1 + e * o.dilation.1) as isize - o.padding.1 as isize;
                                if r < 0 || q < 0 || r >= h as isize || q >= wd as isize {
                                    continue;
                                }
                                let (r, q) = (r as usize, q as usize);
                                acc += wv[((oi * c + ci) * kh + a) * kw + e] * xv[((ni * c + ci) * h + r) * wd + q];
                            }
                        }
                    }
                    y.push(acc);
                }
            }
        }
    }
    y
}

/// conv_transpose2d straight from its definition: every input pixel `(i, j)` scatters
/// `x[n][c][i][j] * w[c][o]` onto output pixels `(i s - p + a d, j s - p + e d)`, with the output
/// size `(H - 1) s - 2 p + d (k - 1) + output_padding + 1`.
fn conv_transpose2d_reference(x: &Tensor, w: &Tensor, b: Option<&Tensor>, o: ConvOptions) -> Vec<f64> {
    let (xs, ws) = (x.shape(), w.shape());
    let (n, c, h, wd) = (xs[0], xs[1], xs[2], xs[3]);
    let (oc, kh, kw) = (ws[1], ws[2], ws[3]);
    let ho = (h - 1) * o.stride.0 + o.dilation.0 * (kh - 1) + o.output_padding.0 + 1 - 2 * o.padding.0;
    let wo = (wd - 1) * o.stride.1 + o.dilation.1 * (kw - 1) + o.output_padding.1 + 1 - 2 * o.padding.1;
    let (xv, wv) = (x.to_vec_f64(), w.to_vec_f64());
    let bv = b.map(|b| b.to_vec_f64()).unwrap_or_else(|| vec![0.0; oc]);
    let mut y = vec![0.0; n * oc * ho * wo];
    for ni in 0..n {
        for oi in 0..oc {
            y[(ni * oc + oi) * ho * wo..(ni * oc + oi + 1) * ho * wo].fill(bv[oi]);
            for ci in 0..c {
                for i in 0..h {
                    for j in 0..wd {
                        for a in 0..kh {
                            for e in 0..kw {
                                let r = (i * o.stride.0 + a * o.dilation.0) as isize - o.padding.0 as isize;
                                let q = (j * o.stride.1 + e * o.dilation.1) as isize - o.padding.1 as isize;
                                if r < 0 || q < 0 || r >= ho as isize || q >= wo as isize {
                                    continue;
                                }
                                let (r, q) = (r as usize, q as usize);
                                y[((ni * oc + oi) * ho + r) * wo + q] +=
                                    xv[((ni * c + ci) * h + i) * wd + j] * wv[((ci * oc + oi) * kh + a) * kw + e];
                            }
                        }
                    }
                }
            }
        }
    }
    y
}

/// Options for the reference grids: strides 1 to 3, paddings 0 to 2, dilations 1 and 2, and
/// some that differ between the axes.
fn reference_grid() -> Vec<ConvOptions> {
    let mut grid = Vec::new();
    for stride in [1, 2, 3] {
        for padding in [0, 1, 2] {
            for dilation in [1, 2] {
                grid.push(ConvOptions::new().stride(stride).padding(padding).dilation(dilation));
            }
        }
    }
    grid.push(ConvOptions {
        stride: (2, 1),
        padding: (0, 2),
        dilation: (1, 2),
        output_padding: (0, 0),
    });
    grid.push(ConvOptions {
        stride: (1, 3),
        padding: (2, 1),
        dilation: (2, 1),
        output_padding: (0, 0),
    });
    grid
}

#[test]
fn conv2d_matches_its_definition_across_a_grid() {
    let x = randn(&[3, 2, 5, 7], 1);
    let b = randn(&[3], 2);
    for (kh, kw) in [(3, 3), (3, 2), (1, 1), (2, 3)] {
        let w = randn(&[3, 2, kh, kw], 3 + (kh * 10 + kw) as u64);
        for opts in reference_grid() {
            for bias in [None, Some(&b)] {
                let got = x.conv2d(&w, bias, opts);
                let want = conv2d_reference(&x, &w, bias, opts);
                let what = format!("conv2d kernel {kh}x{kw}, bias {}, {opts:?}", bias.is_some());
                assert_close(&got.to_vec_f64(), &want, 1e-12, &what);
            }
        }
    }
}

#[test]
fn conv_transpose2d_matches_its_definition_across_a_grid() {
    let x = randn(&[3, 2, 3, 4], 20);
    let b = randn(&[3], 21);
    for (kh, kw) in [(3, 3), (3, 2), (1, 1), (2, 3)] {
        let w = randn(&[2, 3, kh, kw], 22 + (kh * 10 + kw) as u64);
        for base in reference_grid() {
            for output_padding in [0, 1, 2] {
                let opts = ConvOptions {
                    output_padding: (output_padding, output_padding),
                    ..base
                };
                let fits = output_padding < opts.stride.0.max(opts.dilation.0)
                    && output_padding < opts.stride.1.max(opts.dilation.1);
                // Skip option sets PyTorch rejects, and those whose output would be empty.
                let full_h = 2 * opts.stride.0 + opts.dilation.0 * (kh - 1) + output_padding + 1;
                let full_w = 3 * opts.stride.1 + opts.dilation.1 * (kw - 1) + output_padding + 1;
                if !fits || full_h <= 2 * opts.padding.0 || full_w <= 2 * opts.padding.1 {
                    continue;
                }
                for bias in [None, Some(&b)] {
                    let got = x.conv_transpose2d(&w, bias, opts);
                    let want = conv_transpose2d_reference(&x, &w, bias, opts);
                    let what = format!("conv_transpose2d kernel {kh}x{kw}, bias {}, {opts:?}", bias.is_some());
                    assert_close(&got.to_vec_f64(), &want, 1e-12, &what);
                }
            }
        }
    }
}

#[test]
fn conv_transpose2d_is_the_adjoint_of_conv2d() {
    // <conv2d(x, w), y> = <x, conv_transpose2d(y, w)> when the transpose's output padding
    // restores x's size: that is what makes it conv2d's input gradient.
    let x = randn(&[3, 2, 5, 7], 40);
    let w = randn(&[3, 2, 3, 2], 41);
    for opts in reference_grid() {
        let y_shape = x.conv2d(&w, None, opts).shape().to_vec();
        let y = randn(&y_shape, 42);
        let lost = |input: usize, k: usize, s: usize, p: usize, d: usize| (input + 2 * p - d * (k - 1) - 1) % s;
        let t_opts = ConvOptions {
            output_padding: (
                lost(5, 3, opts.stride.0, opts.padding.0, opts.dilation.0),
                lost(7, 2, opts.stride.1, opts.padding.1, opts.dilation.1),
            ),
            ..opts
        };
        let xt = y.conv_transpose2d(&w, None, t_opts);
        assert_eq!(xt.shape(), x.shape(), "{t_opts:?}");
        let (lhs, rhs) = (dot(&x.conv2d(&w, None, opts), &y), dot(&x, &xt));
        assert!((lhs - rhs).abs() < 1e-10, "{opts:?}: {lhs} vs {rhs}");
    }
}

#[test]
fn conv2d_weight_grad_equals_the_weight_gradient_of_conv2d() {
    let x = randn(&[3, 2, 5, 7], 50);
    for (i, opts) in reference_grid().into_iter().enumerate() {
        let w = randn(&[3, 2, 3, 2], 51 + i as u64).requires_grad_(true);
        let y = x.conv2d(&w, None, opts);
        let gy = randn(y.shape(), 52 + i as u64);
        let want = grad(&[&y], &[&w], Some(&[&gy]), false).remove(0);
        let got = x.conv2d_weight_grad(&gy, (3, 2), opts);
        assert_eq!(got.shape(), w.shape());
        assert_close(
            &got.to_vec_f64(),
            &want.to_vec_f64(),
            1e-12,
            &format!("conv2d_weight_grad {opts:?}"),
        );
        // And it is the adjoint in w: <conv2d(x, w), gy> = <w, W(x, gy)>.
        let (lhs, rhs) = (dot(&y, &gy), dot(&w, &got));
        assert!((lhs - rhs).abs() < 1e-10, "{opts:?}: {lhs} vs {rhs}");
    }
}

// ---------------------------------------------------------------- matmul

#[test]
fn matmul_2x3_by_3x2_matches_hand_computation() {
    let a = tensor(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3]);
    let b = tensor(&[7.0, 8.0, 9.0, 10.0, 11.0, 12.0], &[3, 2]);
    let c = a.matmul(&b);
    assert_eq!(c.shape(), &[2, 2]);
    // [1*7 + 2*9 + 3*11, 1*8 + 2*10 + 3*12; 4*7 + 5*9 + 6*11, 4*8 + 5*10 + 6*12]
    assert_eq!(c.to_vec_f64(), vec![58.0, 64.0, 139.0, 154.0]);
}

/// Two 2x2 matrices per operand: `a = [[1, 2], [3, 4]], [[0, 1], [1, 0]]` and
/// `b = [[5, 6], [7, 8]], [[2, 0], [0, 3]]`.
fn batch_pair() -> (Tensor, Tensor) {
    (
        tensor(&[1.0, 2.0, 3.0, 4.0, 0.0, 1.0, 1.0, 0.0], &[2, 2, 2]),
        tensor(&[5.0, 6.0, 7.0, 8.0, 2.0, 0.0, 0.0, 3.0], &[2, 2, 2]),
    )
}

#[test]
fn batched_matmul_multiplies_matching_batches() {
    let (a, b) = batch_pair();
    let c = a.matmul(&b);
    assert_eq!(c.shape(), &[2, 2, 2]);
    // Batch 0 is the classic [[19, 22], [43, 50]]; batch 1 swaps the rows of diag(2, 3).
    assert_eq!(c.to_vec_f64(), vec![19.0, 22.0, 43.0, 50.0, 0.0, 3.0, 2.0, 0.0]);
}

#[test]
fn matmul_broadcasts_a_matrix_over_the_batch_on_either_side() {
    let (a, b) = batch_pair();
    // diag(1, 2) @ b[i] doubles each b[i]'s second row.
    let left = tensor(&[1.0, 0.0, 0.0, 2.0], &[2, 2]).matmul(&b);
    assert_eq!(left.shape(), &[2, 2, 2]);
    assert_eq!(left.to_vec_f64(), vec![5.0, 6.0, 14.0, 16.0, 2.0, 0.0, 0.0, 6.0]);
    // a[i] @ [[1, 1], [0, 1]] adds each row's first entry to its second.
    let right = a.matmul(&tensor(&[1.0, 1.0, 0.0, 1.0], &[2, 2]));
    assert_eq!(right.shape(), &[2, 2, 2]);
    assert_eq!(right.to_vec_f64(), vec![1.0, 3.0, 3.0, 7.0, 0.0, 1.0, 1.0, 1.0]);
}

#[test]
fn matmul_transposed_equals_matmul_of_explicit_transposes() {
    let a = randn(&[3, 4, 5], 60);
    let b = randn(&[3, 5, 2], 61);
    let want = a.matmul(&b).to_vec_f64();
    let (at, bt) = (a.transpose(-2, -1), b.transpose(-2, -1));
    assert_close(
        &at.matmul_transposed(&b, true, false).to_vec_f64(),
        &want,
        1e-12,
        "a^T stored, read transposed",
    );
    assert_close(
        &a.matmul_transposed(&bt, false, true).to_vec_f64(),
        &want,
        1e-12,
        "b^T stored, read transposed",
    );
    assert_close(
        &at.matmul_transposed(&bt, true, true).to_vec_f64(),
        &want,
        1e-12,
        "both stored transposed",
    );
}

/// `a [batch?, m, k] @ b [batch?, k, n]` by three nested loops, either operand possibly a plain
/// matrix broadcast over the batch.
fn matmul_reference(a: &Tensor, b: &Tensor) -> Vec<f64> {
    let (ar, br) = (a.rank(), b.rank());
    let (m, k, n) = (a.shape()[ar - 2], a.shape()[ar - 1], b.shape()[br - 1]);
    let batch = match (ar, br) {
        (3, _) => a.shape()[0],
        (_, 3) => b.shape()[0],
        _ => 1,
    };
    let (av, bv) = (a.to_vec_f64(), b.to_vec_f64());
    let (a_step, b_step) = (if ar == 3 { m * k } else { 0 }, if br == 3 { k * n } else { 0 });
    let mut c = Vec::with_capacity(batch * m * n);
    for bi in 0..batch {
        for i in 0..m {
            for j in 0..n {
                let s = (0..k)
                    .map(|p| av[bi * a_step + i * k + p] * bv[bi * b_step + p * n + j])
                    .sum();
                c.push(s);
            }
        }
    }
    c
}

#[test]
fn large_matmul_split_across_threads_matches_the_definition() {
    // Past about a million flops the kernel splits each product into row blocks across
    // threads; odd sizes leave a ragged last block and a remainder below the 4-row unroll.
    let cases: [(&[usize], &[usize]); 3] = [
        (&[70, 121], &[121, 67]),
        (&[2, 71, 130], &[130, 61]),
        (&[75, 140], &[3, 140, 33]),
    ];
    for (i, (sa, sb)) in cases.into_iter().enumerate() {
        let (a, b) = (randn(sa, 70 + i as u64), randn(sb, 80 + i as u64));
        let want = matmul_reference(&a, &b);
        let what = format!("{sa:?} @ {sb:?}");
        assert_close(&a.matmul(&b).to_vec_f64(), &want, 1e-9, &what);
        // The same product with the operands stored transposed.
        let (at, bt) = (a.transpose(-2, -1), b.transpose(-2, -1));
        let got = at.matmul_transposed(&bt, true, true).to_vec_f64();
        assert_close(&got, &want, 1e-9, &format!("{what}, both transposed"));
    }
}

#[test]
fn linear_matches_hand_computation() {
    // x W^T + b with W = [[1, 0, -1], [2, 1, 0]]: [1 - 3 + 0.5, 2 + 2 - 1].
    let x = tensor(&[1.0, 2.0, 3.0], &[1, 3]);
    let w = tensor(&[1.0, 0.0, -1.0, 2.0, 1.0, 0.0], &[2, 3]);
    let b = tensor(&[0.5, -1.0], &[2]);
    let y = x.linear(&w, Some(&b));
    assert_eq!(y.shape(), &[1, 2]);
    assert_eq!(y.to_vec_f64(), vec![-1.5, 3.0]);
    // A 1-d input gives a 1-d output.
    let y = tensor(&[1.0, 2.0, 3.0], &[3]).linear(&w, None);
    assert_eq!(y.shape(), &[2]);
    assert_eq!(y.to_vec_f64(), vec![-2.0, 4.0]);
}
