//! Rows of a dataset in a shuffled order that is a pure function of (seed, position): the CPU
//! twin of `gather_shuffled_rows` in `kernels/random.cu`, integer for integer, so that a batch
//! drawn on a GPU is the batch drawn on the CPU.
//!
//! Position `p` of the endless sequence of epochs over `n` rows is row `perm_e(p % n)` of
//! epoch `e = p / n`, where `perm_e` is a bijection of `[0, n)` keyed by `(seed, e)`: a 4-round
//! Feistel network over the smallest even number of bits that holds `n` (its round function a
//! Philox word), applied again until the value lands inside `[0, n)` (cycle walking, fewer than
//! 4 passes on average). So every row comes once per epoch, each epoch in a new order, and no
//! permutation is stored or uploaded: a batch is `[position, position + rows)`.

use super::random::philox;

/// The row at `position` of the shuffled sequence of epochs over `source_rows` rows
/// (`source_rows > 0`).
pub fn shuffled_row(position: u64, source_rows: u64, seed: u64) -> u64 {
    debug_assert!(source_rows > 0, "shuffled_row: no rows");
    let (epoch, mut x) = (position / source_rows, position % source_rows);
    let mut bits = 2;
    while bits < 64 && (1u64 << bits) < source_rows {
        bits += 2;
    }
    let half = bits / 2;
    let mask = (1u64 << half) - 1;
    loop {
        let (mut left, mut right) = (x >> half, x & mask);
        for round in 0..4u64 {
            let f = philox(right | (round << 32), epoch, seed)[0] as u64 & mask;
            (left, right) = (right, left ^ f);
        }
        x = (left << half) | right;
        if x < source_rows {
            return x;
        }
    }
}

/// `rows` rows of `row_len` values each: row `r` is row `shuffled_row(position + r, ..)` of
/// `src` (`source_rows` rows of `row_len`).
pub fn gather_shuffled_rows<T: Copy>(src: &[T], row_len: usize, rows: usize, position: u64, seed: u64) -> Vec<T> {
    let source_rows = (src.len() / row_len.max(1)) as u64;
    let mut out = Vec::with_capacity(rows * row_len);
    for r in 0..rows as u64 {
        let row = shuffled_row(position + r, source_rows, seed) as usize;
        out.extend_from_slice(&src[row * row_len..(row + 1) * row_len]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_epoch_is_a_permutation_and_epochs_differ() {
        for n in [1u64, 2, 3, 5, 17, 100, 1000, 4097] {
            let epoch = |e: u64| -> Vec<u64> { (0..n).map(|i| shuffled_row(e * n + i, n, 9)).collect() };
            let (first, second) = (epoch(0), epoch(1));
            for order in [&first, &second] {
                let mut sorted = order.clone();
                sorted.sort();
                assert_eq!(sorted, (0..n).collect::<Vec<_>>(), "n {n}");
            }
            if n >= 5 {
                assert_ne!(first, second, "n {n}: a new order each epoch");
                assert_ne!(first, (0..n).collect::<Vec<_>>(), "n {n}: shuffled");
                let other_seed: Vec<u64> = (0..n).map(|i| shuffled_row(i, n, 10)).collect();
                assert_ne!(first, other_seed, "n {n}: the seed matters");
            }
        }
    }

    #[test]
    fn gathered_rows_are_the_shuffled_rows_across_an_epoch_boundary() {
        let src: Vec<f32> = (0..7 * 3).map(|v| v as f32).collect();
        let out = gather_shuffled_rows(&src, 3, 5, 4, 2);
        for r in 0..5 {
            let row = shuffled_row(4 + r as u64, 7, 2) as usize;
            assert_eq!(&out[r * 3..r * 3 + 3], &src[row * 3..row * 3 + 3]);
        }
    }
}
