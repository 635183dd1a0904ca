//! Finite-difference checks of the matrix products (`crates/tensor/src/ops/matmul.rs`:
//! matmul, matmul_transposed, linear), first and second order, on every device (see
//! `common::devices`).
//!
//! `cargo test --test grad_matmul` (add `--features emulator` for the CUDA emulator).

mod common;

use common::{check2, for_each_device, randn};

/// Shapes of matmul operands: plain matrices, batched, and a matrix broadcast over the other
/// operand's batch (on either side).
const MATMUL_CASES: [(&[usize], &[usize]); 6] = [
    (&[3, 5], &[5, 4]),
    (&[3, 2, 5], &[3, 5, 4]),
    (&[2, 3, 2, 5], &[2, 3, 5, 4]),
    (&[3, 2, 5], &[5, 4]),
    (&[2, 5], &[3, 5, 4]),
    (&[2, 3, 2, 5], &[5, 4]),
];

/// `shape` with its last two dims swapped: the stored shape of an operand read transposed.
fn transposed_shape(shape: &[usize]) -> Vec<usize> {
    let mut s = shape.to_vec();
    let r = s.len();
    s.swap(r - 2, r - 1);
    s
}

#[test]
fn matmul_2d_batched_and_broadcast_passes_gradcheck_and_gradgradcheck() {
    for_each_device(|device| {
        for (i, (a, b)) in MATMUL_CASES.into_iter().enumerate() {
            let seed = 400 + 2 * i as u64;
            check2(
                device,
                &format!("matmul {a:?} @ {b:?}"),
                |xs| xs[0].matmul(&xs[1]),
                &[randn(a, seed), randn(b, seed + 1)],
            );
        }
    });
}

#[test]
fn matmul_transposed_passes_gradcheck_and_gradgradcheck_for_all_four_flag_combinations() {
    for_each_device(|device| {
        for (i, (a, b)) in MATMUL_CASES.into_iter().enumerate() {
            for ta in [false, true] {
                for tb in [false, true] {
                    let seed = 420 + 4 * i as u64 + 2 * ta as u64 + tb as u64;
                    // Store each operand so that reading it with its flag gives the shapes above.
                    let a_stored = if ta { transposed_shape(a) } else { a.to_vec() };
                    let b_stored = if tb { transposed_shape(b) } else { b.to_vec() };
                    check2(
                        device,
                        &format!("matmul_transposed {a_stored:?} (transposed {ta}) @ {b_stored:?} (transposed {tb})"),
                        |xs| xs[0].matmul_transposed(&xs[1], ta, tb),
                        &[randn(&a_stored, seed), randn(&b_stored, seed + 100)],
                    );
                }
            }
        }
    });
}

#[test]
fn linear_with_and_without_bias_passes_gradcheck_and_gradgradcheck() {
    for_each_device(|device| {
        let w = randn(&[4, 5], 450);
        let b = randn(&[4], 451);
        for (i, x_shape) in [&[3, 5][..], &[2, 3, 5], &[5]].into_iter().enumerate() {
            let x = randn(x_shape, 452 + i as u64);
            check2(
                device,
                &format!("linear {x_shape:?} with bias"),
                |xs| xs[0].linear(&xs[1], Some(&xs[2])),
                &[x.clone(), w.clone(), b.clone()],
            );
            check2(
                device,
                &format!("linear {x_shape:?} without bias"),
                |xs| xs[0].linear(&xs[1], None),
                &[x, w.clone()],
            );
        }
    });
}
