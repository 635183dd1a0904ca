//! Counter-based random numbers: Philox4x32-10 (Salmon et al., SC 2011), the generator of the
//! CUDA kernels in `kernels/random.cu`, so that a seed gives the same numbers on either device.
//! Element `i` of a stream is a pure function of (seed, stream, i): any thread, on any device,
//! computes it without shared state, and results do not depend on how the work is split.

use super::PARALLEL_THRESHOLD;
use crate::Element;
use rayon::prelude::*;

/// The ten-round Philox4x32 block for counter `(counter_lo, counter_hi)` and key `seed`.
pub fn philox(counter_lo: u64, counter_hi: u64, seed: u64) -> [u32; 4] {
    let (mut c0, mut c1) = (counter_lo as u32, (counter_lo >> 32) as u32);
    let (mut c2, mut c3) = (counter_hi as u32, (counter_hi >> 32) as u32);
    let (mut k0, mut k1) = (seed as u32, (seed >> 32) as u32);
    for _ in 0..10 {
        let p0 = 0xD251_1F53u64 * c0 as u64;
        let p1 = 0xCD9E_8D57u64 * c2 as u64;
        let (hi0, lo0) = ((p0 >> 32) as u32, p0 as u32);
        let (hi1, lo1) = ((p1 >> 32) as u32, p1 as u32);
        (c0, c1, c2, c3) = (hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0);
        k0 = k0.wrapping_add(0x9E37_79B9);
        k1 = k1.wrapping_add(0xBB67_AE85);
    }
    [c0, c1, c2, c3]
}

/// The Philox key of draw `index` of the sequence of draws seeded by `seed`: splitmix64's
/// finaliser of `seed ^ (index + 1) * 0x9E3779B97F4A7C15`, so that neighbouring draws get
/// unrelated keys. A training run keys iteration `i`'s random numbers so; `random.cu`'s
/// `*_at` kernels compute the same key on the device from an index held there, so that a CUDA
/// graph replaying them draws anew at each replay as the index advances.
pub fn sequence_key(seed: u64, index: u64) -> u64 {
    let mut x = seed ^ index.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// A 32-bit word as a uniform number in (0, 1): never 0, so its log is finite.
fn unit(word: u32) -> f64 {
    (word as f64 + 0.5) * (1.0 / 4_294_967_296.0)
}

fn fill<T: Element>(n: usize, value: impl Fn(usize) -> f64 + Sync) -> Vec<T> {
    let mut out = vec![T::ZERO; n];
    let body = |(chunk, o): (usize, &mut [T])| {
        for (j, o) in o.iter_mut().enumerate() {
            *o = T::from_f64(value(chunk * 4096 + j));
        }
    };
    if n >= PARALLEL_THRESHOLD {
        out.par_chunks_mut(4096).enumerate().for_each(body);
    } else {
        out.chunks_mut(4096).enumerate().for_each(body);
    }
    out
}

/// `n` numbers uniform on (low, high): element i is word `i % 4` of the block at counter
/// `(i / 4, stream)`.
pub fn uniform<T: Element>(n: usize, seed: u64, stream: u64, low: f64, high: f64) -> Vec<T> {
    fill(n, |i| {
        let words = philox((i / 4) as u64, stream, seed);
        low + (high - low) * unit(words[i % 4])
    })
}

/// `n` normal numbers: elements 2j and 2j + 1 are the Box-Muller pair of words 2(j % 2) and
/// 2(j % 2) + 1 of the block at counter `(j / 2, stream)`, computed in f64.
pub fn normal<T: Element>(n: usize, seed: u64, stream: u64, mean: f64, std: f64) -> Vec<T> {
    fill(n, |i| {
        let pair = i / 2;
        let words = philox((pair / 2) as u64, stream, seed);
        let first = (pair % 2) * 2;
        let (u1, u2) = (unit(words[first]), unit(words[first + 1]));
        let (radius, angle) = ((-2.0 * u1.ln()).sqrt(), std::f64::consts::TAU * u2);
        let z = if i % 2 == 0 {
            radius * angle.cos()
        } else {
            radius * angle.sin()
        };
        mean + std * z
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn philox_matches_the_published_known_answers() {
        // Random123's kat_vectors for philox4x32_10.
        assert_eq!(philox(0, 0, 0), [0x6627_e8d5, 0xe169_c58d, 0xbc57_ac4c, 0x9b00_dbd8]);
        let ones = u32::MAX as u64 | (u32::MAX as u64) << 32;
        assert_eq!(
            philox(ones, ones, ones),
            [0x408f_276d, 0x41c8_3b0e, 0xa20b_c7c6, 0x6d54_51fd]
        );
        let pi = (0x243f_6a88u64) | (0x85a3_08d3u64 << 32);
        let pi_hi = (0x1319_8a2eu64) | (0x0370_7344u64 << 32);
        let key = (0xa409_3822u64) | (0x299f_31d0u64 << 32);
        assert_eq!(
            philox(pi, pi_hi, key),
            [0xd16c_fe09, 0x94fd_cceb, 0x5001_e420, 0x2412_6ea1]
        );
    }

    #[test]
    fn sequence_keys_are_splitmix64_of_the_index() {
        // splitmix64's first outputs from state 0 (Vigna's reference): its finaliser of
        // (k + 1) * gamma, which sequence_key computes for seed 0.
        assert_eq!(sequence_key(0, 0), 0xE220_A839_7B1D_CDAF);
        assert_eq!(sequence_key(0, 1), 0x6E78_9E6A_A1B9_65F4);
        assert_ne!(sequence_key(1, 0), sequence_key(0, 0));
    }

    #[test]
    fn normals_have_unit_moments_and_uniforms_fill_the_interval() {
        let z: Vec<f64> = normal(200_000, 7, 0, 0.0, 1.0);
        let mean = z.iter().sum::<f64>() / z.len() as f64;
        let var = z.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / z.len() as f64;
        assert!(mean.abs() < 0.01 && (var - 1.0).abs() < 0.01, "{mean} {var}");
        let u: Vec<f32> = uniform(100_000, 7, 1, -2.0, 3.0);
        assert!(u.iter().all(|&v| v > -2.0 && v < 3.0));
        let mean = u.iter().map(|&v| v as f64).sum::<f64>() / u.len() as f64;
        assert!((mean - 0.5).abs() < 0.02, "{mean}");
        // Another stream or seed gives other numbers; the same gives the same.
        assert_ne!(normal::<f64>(8, 7, 0, 0.0, 1.0), normal::<f64>(8, 7, 1, 0.0, 1.0));
        assert_eq!(normal::<f64>(8, 7, 0, 0.0, 1.0), normal::<f64>(8, 7, 0, 0.0, 1.0));
    }
}
