//! Sample-quality metrics computed from a classifier's outputs: the classifier score
//! (Inception-score style), the Frechet distance between feature distributions, and mode
//! coverage. They are plain numeric functions over `f64` slices, so that any classifier's
//! probabilities and features can be fed to them.

/// `exp(E_x KL(p(y|x) || p(y)))` for row-major class probabilities `probs` (`n` rows of
/// `classes`): 1 when every sample gets the same prediction, `classes` when the predictions are
/// confident and spread evenly over the classes.
pub fn classifier_score(probs: &[f64], classes: usize) -> f64 {
    assert!(
        classes > 0 && !probs.is_empty() && probs.len().is_multiple_of(classes),
        "classifier_score: bad shape"
    );
    let n = probs.len() / classes;
    let mut marginal = vec![0.0; classes];
    for row in probs.chunks(classes) {
        marginal.iter_mut().zip(row).for_each(|(m, &p)| *m += p / n as f64);
    }
    let mean_kl: f64 = probs
        .chunks(classes)
        .map(|row| {
            row.iter()
                .zip(&marginal)
                .filter(|(&p, _)| p > 0.0)
                .map(|(&p, &m)| p * (p / m).ln())
                .sum::<f64>()
        })
        .sum::<f64>()
        / n as f64;
    mean_kl.exp()
}

/// The mean vector and the (unbiased, `n - 1`) covariance matrix of `n` row-major feature
/// vectors of length `dim`.
pub fn mean_and_covariance(features: &[f64], dim: usize) -> (Vec<f64>, Vec<f64>) {
    assert!(
        dim > 0 && features.len().is_multiple_of(dim) && features.len() >= 2 * dim,
        "mean_and_covariance: need 2+ rows"
    );
    let n = features.len() / dim;
    let mut mean = vec![0.0; dim];
    for row in features.chunks(dim) {
        mean.iter_mut().zip(row).for_each(|(m, &x)| *m += x / n as f64);
    }
    let mut cov = vec![0.0; dim * dim];
    for row in features.chunks(dim) {
        for i in 0..dim {
            let di = row[i] - mean[i];
            for j in i..dim {
                cov[i * dim + j] += di * (row[j] - mean[j]);
            }
        }
    }
    for i in 0..dim {
        for j in i..dim {
            let v = cov[i * dim + j] / (n - 1) as f64;
            cov[i * dim + j] = v;
            cov[j * dim + i] = v;
        }
    }
    (mean, cov)
}

/// The Frechet distance between the Gaussians N(mu1, s1) and N(mu2, s2) (`dim x dim`
/// covariances): `|mu1 - mu2|^2 + tr(s1 + s2 - 2 (s1 s2)^(1/2))`. The trace of the matrix
/// square root is taken as `tr((s1^(1/2) s2 s1^(1/2))^(1/2))`, a symmetric problem.
pub fn frechet_distance(mu1: &[f64], s1: &[f64], mu2: &[f64], s2: &[f64]) -> f64 {
    let dim = mu1.len();
    assert!(
        mu2.len() == dim && s1.len() == dim * dim && s2.len() == dim * dim,
        "frechet_distance: shapes differ"
    );
    let mean_term: f64 = mu1.iter().zip(mu2).map(|(a, b)| (a - b).powi(2)).sum();
    let root1 = sqrt_psd(s1, dim);
    let inner = matmul(&matmul(&root1, s2, dim), &root1, dim);
    let (eigenvalues, _) = symmetric_eigen(&inner, dim);
    let trace_sqrt: f64 = eigenvalues.iter().map(|&l| l.max(0.0).sqrt()).sum();
    let trace = |s: &[f64]| (0..dim).map(|i| s[i * dim + i]).sum::<f64>();
    (mean_term + trace(s1) + trace(s2) - 2.0 * trace_sqrt).max(0.0)
}

/// How generated samples spread over the classes.
#[derive(Clone, Debug, PartialEq)]
pub struct ModeCoverage {
    /// Samples predicted as each class.
    pub histogram: Vec<usize>,
    /// Classes predicted at least once.
    pub covered: usize,
    /// KL divergence of the predicted-class distribution from the uniform one (0 is perfect).
    pub kl_from_uniform: f64,
    /// Share of samples whose top probability is at least the threshold.
    pub confident_share: f64,
}

/// Mode coverage of `probs` (`n` rows of `classes`), counting a sample as confident when its
/// top class probability reaches `confidence`.
pub fn mode_coverage(probs: &[f64], classes: usize, confidence: f64) -> ModeCoverage {
    assert!(
        classes > 0 && !probs.is_empty() && probs.len().is_multiple_of(classes),
        "mode_coverage: bad shape"
    );
    let n = probs.len() / classes;
    let mut histogram = vec![0; classes];
    let mut confident = 0;
    for row in probs.chunks(classes) {
        let (best, &p) = row
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .expect("classes > 0");
        histogram[best] += 1;
        confident += usize::from(p >= confidence);
    }
    let uniform = 1.0 / classes as f64;
    let kl_from_uniform = histogram
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let q = c as f64 / n as f64;
            q * (q / uniform).ln()
        })
        .sum();
    ModeCoverage {
        covered: histogram.iter().filter(|&&c| c > 0).count(),
        histogram,
        kl_from_uniform,
        confident_share: confident as f64 / n as f64,
    }
}

/// Spearman's rank correlation of paired samples: Pearson's correlation of their ranks, ties
/// given their average rank. +1 when `y` grows with `x`, -1 when it falls, near 0 when unrelated.
/// `None` with fewer than 3 pairs, when one side is constant, or when a value is not finite.
pub fn spearman(x: &[f64], y: &[f64]) -> Option<f64> {
    if x.len() != y.len() || x.len() < 3 || x.iter().chain(y).any(|v| !v.is_finite()) {
        return None;
    }
    let (rx, ry) = (ranks(x), ranks(y));
    let mean = (x.len() as f64 + 1.0) / 2.0;
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for (a, b) in rx.iter().zip(&ry) {
        sxy += (a - mean) * (b - mean);
        sxx += (a - mean).powi(2);
        syy += (b - mean).powi(2);
    }
    (sxx > 0.0 && syy > 0.0).then(|| sxy / (sxx * syy).sqrt())
}

/// 1-based ranks of `values`, tied values sharing the mean of the ranks they span.
fn ranks(values: &[f64]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..values.len()).collect();
    order.sort_by(|&a, &b| values[a].total_cmp(&values[b]));
    let mut ranks = vec![0.0; values.len()];
    let mut start = 0;
    while start < order.len() {
        let mut end = start + 1;
        while end < order.len() && values[order[end]] == values[order[start]] {
            end += 1;
        }
        let shared = (start + end + 1) as f64 / 2.0;
        order[start..end].iter().for_each(|&i| ranks[i] = shared);
        start = end;
    }
    ranks
}

fn matmul(a: &[f64], b: &[f64], n: usize) -> Vec<f64> {
    let mut c = vec![0.0; n * n];
    for i in 0..n {
        for k in 0..n {
            let aik = a[i * n + k];
            for j in 0..n {
                c[i * n + j] += aik * b[k * n + j];
            }
        }
    }
    c
}

/// The square root of a symmetric positive semi-definite matrix, by its eigendecomposition
/// (negative eigenvalues from rounding are taken as 0).
fn sqrt_psd(a: &[f64], n: usize) -> Vec<f64> {
    let (values, vectors) = symmetric_eigen(a, n);
    let mut out = vec![0.0; n * n];
    for (k, &l) in values.iter().enumerate() {
        let r = l.max(0.0).sqrt();
        for i in 0..n {
            let vik = vectors[i * n + k] * r;
            for j in 0..n {
                out[i * n + j] += vik * vectors[j * n + k];
            }
        }
    }
    out
}

/// Eigenvalues and eigenvectors (as columns of a row-major matrix) of a symmetric matrix, by
/// cyclic Jacobi rotations: slow for large matrices but exact to rounding and simple.
fn symmetric_eigen(a: &[f64], n: usize) -> (Vec<f64>, Vec<f64>) {
    let mut m = a.to_vec();
    let mut v = vec![0.0; n * n];
    (0..n).for_each(|i| v[i * n + i] = 1.0);
    let scale: f64 = m.iter().map(|x| x * x).sum::<f64>().sqrt().max(f64::MIN_POSITIVE);
    for _sweep in 0..100 {
        let off: f64 = (0..n)
            .flat_map(|i| (0..n).filter(move |&j| j != i).map(move |j| (i, j)))
            .map(|(i, j)| m[i * n + j].powi(2))
            .sum();
        if off.sqrt() <= 1e-15 * scale {
            break;
        }
        for p in 0..n {
            for q in p + 1..n {
                let apq = m[p * n + q];
                if apq == 0.0 {
                    continue;
                }
                let theta = (m[q * n + q] - m[p * n + p]) / (2.0 * apq);
                let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                let t = if theta == 0.0 { 1.0 } else { t };
                let c = 1.0 / (t * t + 1.0).sqrt();
                let s = t * c;
                for k in 0..n {
                    let (mkp, mkq) = (m[k * n + p], m[k * n + q]);
                    m[k * n + p] = c * mkp - s * mkq;
                    m[k * n + q] = s * mkp + c * mkq;
                }
                for k in 0..n {
                    let (mpk, mqk) = (m[p * n + k], m[q * n + k]);
                    m[p * n + k] = c * mpk - s * mqk;
                    m[q * n + k] = s * mpk + c * mqk;
                }
                for k in 0..n {
                    let (vkp, vkq) = (v[k * n + p], v[k * n + q]);
                    v[k * n + p] = c * vkp - s * vkq;
                    v[k * n + q] = s * vkp + c * vkq;
                }
            }
        }
    }
    ((0..n).map(|i| m[i * n + i]).collect(), v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one_hot(labels: &[usize], classes: usize) -> Vec<f64> {
        labels
            .iter()
            .flat_map(|&l| (0..classes).map(move |c| if c == l { 1.0 } else { 0.0 }))
            .collect()
    }

    #[test]
    fn classifier_score_spans_one_to_the_class_count() {
        let spread = one_hot(&(0..100).map(|i| i % 10).collect::<Vec<_>>(), 10);
        assert!((classifier_score(&spread, 10) - 10.0).abs() < 1e-9);
        let collapsed = one_hot(&[3; 50], 10);
        assert!((classifier_score(&collapsed, 10) - 1.0).abs() < 1e-12);
        // Unsure predictions score low even when spread: uniform rows give 1.
        assert!((classifier_score(&vec![0.1; 100], 10) - 1.0).abs() < 1e-12);
    }

    #[test]
    fn frechet_distance_of_a_set_to_itself_is_zero() {
        let features: Vec<f64> = (0..200 * 5)
            .map(|i| ((i * 7919) % 101) as f64 / 50.0 + (i % 5) as f64)
            .collect();
        let (mu, cov) = mean_and_covariance(&features, 5);
        assert!(frechet_distance(&mu, &cov, &mu, &cov).abs() < 1e-9);
    }

    #[test]
    fn frechet_distance_matches_the_closed_form() {
        // Diagonal covariances: sum (m1 - m2)^2 + (s1 - s2)^2 over dims, s the std devs.
        let (mu1, mu2): (Vec<f64>, Vec<f64>) = (vec![0.0, 1.0, 2.0], vec![1.0, 1.0, 0.0]);
        let (sd1, sd2): ([f64; 3], [f64; 3]) = ([1.0, 2.0, 0.5], [3.0, 2.0, 1.5]);
        let diag = |sd: &[f64; 3]| {
            let mut m = vec![0.0; 9];
            (0..3).for_each(|i| m[i * 3 + i] = sd[i] * sd[i]);
            m
        };
        let want: f64 = (0..3)
            .map(|i| (mu1[i] - mu2[i]).powi(2) + (sd1[i] - sd2[i]).powi(2))
            .sum();
        let got = frechet_distance(&mu1, &diag(&sd1), &mu2, &diag(&sd2));
        assert!((got - want).abs() < 1e-9, "{got} vs {want}");
        // A rotated, non-diagonal pair: N(0, R D R^T) against itself shifted keeps the trace
        // term at zero.
        let r = [0.6, -0.8, 0.8, 0.6];
        let d = [4.0, 0.0, 0.0, 1.0];
        let rd = matmul(&r, &d, 2);
        let rt = [0.6, 0.8, -0.8, 0.6];
        let s = matmul(&rd, &rt, 2);
        let got = frechet_distance(&[0.0, 0.0], &s, &[3.0, 4.0], &s);
        assert!((got - 25.0).abs() < 1e-9, "{got}");
    }

    #[test]
    fn mode_coverage_counts_classes_and_confidence() {
        let uniform = one_hot(&(0..40).map(|i| i % 10).collect::<Vec<_>>(), 10);
        let m = mode_coverage(&uniform, 10, 0.9);
        assert_eq!(m.covered, 10);
        assert!(m.kl_from_uniform.abs() < 1e-12);
        assert_eq!(m.confident_share, 1.0);
        let one_class = one_hot(&[7; 20], 10);
        let m = mode_coverage(&one_class, 10, 0.9);
        assert_eq!((m.covered, m.histogram[7]), (1, 20));
        assert!((m.kl_from_uniform - 10f64.ln()).abs() < 1e-12);
        let unsure = vec![0.1; 30];
        assert_eq!(mode_coverage(&unsure, 10, 0.5).confident_share, 0.0);
    }

    #[test]
    fn matrix_square_root_squares_back() {
        // A random symmetric positive definite 6x6: B B^T + I.
        let n = 6;
        let b: Vec<f64> = (0..n * n).map(|i| ((i * 7919 + 13) % 97) as f64 / 48.5 - 1.0).collect();
        let bt: Vec<f64> = (0..n * n).map(|i| b[(i % n) * n + i / n]).collect();
        let mut a = matmul(&b, &bt, n);
        (0..n).for_each(|i| a[i * n + i] += 1.0);
        let root = sqrt_psd(&a, n);
        let back = matmul(&root, &root, n);
        for (x, y) in back.iter().zip(&a) {
            assert!((x - y).abs() < 1e-9, "{x} vs {y}");
        }
    }

    #[test]
    fn spearman_is_one_for_any_increasing_relation_and_handles_ties() {
        let x = [1.0, 2.0, 3.0, 4.0, 5.0];
        let cubes: Vec<f64> = x.iter().map(|v| v * v * v).collect();
        assert!((spearman(&x, &cubes).unwrap() - 1.0).abs() < 1e-12);
        let falling: Vec<f64> = x.iter().map(|v| (-v).exp()).collect();
        assert!((spearman(&x, &falling).unwrap() + 1.0).abs() < 1e-12);
        // Ranks of [1, 2, 2, 3] are [1, 2.5, 2.5, 4]; against [1, 2, 3, 4]: rho = 4.5 / sqrt(4.5 * 5).
        let rho = spearman(&[1.0, 2.0, 2.0, 3.0], &[1.0, 2.0, 3.0, 4.0]).unwrap();
        assert!((rho - (4.5f64 / 5.0).sqrt()).abs() < 1e-12, "{rho}");
        // A textbook case: d = [0, -1, 1, 0, 0] gives 1 - 6 * 2 / (5 * 24) = 0.9.
        let rho = spearman(&[1.0, 2.0, 3.0, 4.0, 5.0], &[1.0, 3.0, 2.0, 4.0, 5.0]).unwrap();
        assert!((rho - 0.9).abs() < 1e-12, "{rho}");
        assert_eq!(spearman(&[1.0, 2.0], &[1.0, 2.0]), None);
        assert_eq!(spearman(&[1.0, 1.0, 1.0], &[1.0, 2.0, 3.0]), None);
        assert_eq!(spearman(&[1.0, f64::NAN, 3.0], &[1.0, 2.0, 3.0]), None);
    }
}
