//! The WGAN paper's parallel lines (Arjovsky et al., Example 1): P0 is the law of (0, Z) and
//! P_theta that of (theta, Z), Z uniform on [0, 1]. For theta != 0 the supports are disjoint,
//! so total variation is 1, KL is infinite and JS is log 2 whatever theta is: none of them tells
//! the generator which way to move. W is |theta|. A critic trained with a gradient penalty
//! recovers |theta| and hands the generator a gradient of size about 1 towards 0, while a trained
//! discriminator's estimate of JS sits at log 2 and the gradient of the minimax generator loss
//! vanishes once it separates the lines.

use earthmover_tensor::{grad, DType, Tensor};
use earthmover_wgan::io::{ensure_writable_dir, write_atomic};
use earthmover_wgan::nn::init::Init;
use earthmover_wgan::nn::{Activation, Linear, Module, Sequential};
use earthmover_wgan::optim::Adam;
use earthmover_wgan::plot::{panels, Panel, Series};
use earthmover_wgan::train::{critic_step, Algo, Objective, Precision};
use earthmover_wgan::{Error, Result};
use rand::rngs::StdRng;
use rand::SeedableRng;
use std::f64::consts::LN_2;
use std::path::Path;

/// The distances of the paper's Example 1 between P0 and P_theta, in closed form.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ClosedForms {
    pub total_variation: f64,
    pub kl: f64,
    pub js: f64,
    pub wasserstein: f64,
}

pub fn closed_forms(theta: f64) -> ClosedForms {
    if theta == 0.0 {
        ClosedForms {
            total_variation: 0.0,
            kl: 0.0,
            js: 0.0,
            wasserstein: 0.0,
        }
    } else {
        ClosedForms {
            total_variation: 1.0,
            kl: f64::INFINITY,
            js: LN_2,
            wasserstein: theta.abs(),
        }
    }
}

/// `n` points of the line at `theta`: `[n, 2]` rows `(theta, z)`, z uniform on [0, 1].
fn line(theta: f64, n: usize, rng: &mut StdRng) -> Tensor {
    let z = Tensor::rand_uniform_with(&[n, 1], 0.0, 1.0, DType::F32, rng);
    Tensor::concat(&[&z.full_like(theta), &z], 1)
}

fn small_mlp(rng: &mut StdRng) -> Sequential {
    Sequential::new()
        .push(Linear::new(2, 64, Init::PyTorch, rng))
        .push(Activation::Relu)
        .push(Linear::new(64, 64, Init::PyTorch, rng))
        .push(Activation::Relu)
        .push(Linear::new(64, 1, Init::PyTorch, rng))
}

/// What a network trained to tell P0 from P_theta reports, and the gradient with respect to
/// theta that a generator placed at theta would receive from it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Estimate {
    pub divergence: f64,
    pub generator_gradient: f64,
}

/// A fresh network trained for `steps` critic steps of `algo` (Adam 1e-3, betas (0.5, 0.9);
/// WGAN-GP: lambda 10) to tell P0 from P_theta, on batches of 256 of each; and the random
/// stream, to draw the evaluation batches from.
fn train_to_separate(algo: Algo, theta: f64, steps: usize, seed: u64) -> Result<(Sequential, StdRng)> {
    let mut rng = StdRng::seed_from_u64(seed);
    let network = small_mlp(&mut rng);
    let mut optim = Adam::new(network.parameters(), 1e-3, (0.5, 0.9));
    let objective = Objective {
        algo,
        clip: 0.0, // neither objective clips
        lambda: 10.0,
        // A pass for each batch, as when the table of docs/experiments.md was made.
        joint_critic_pass: false,
        precision: Precision::F32,
    };
    for _ in 0..steps {
        let (real, fake) = (line(0.0, 256, &mut rng), line(theta, 256, &mut rng));
        critic_step(&objective, &network, &mut optim, None, &real, &fake, &mut rng)?;
    }
    Ok((network, rng))
}

/// Train a WGAN-GP critic (lambda 10) to separate the lines: its `E C(P0) - E C(P_theta)`
/// estimates W; the gradient is that of the generator loss `-E C(theta, Z)`.
pub fn critic_estimate(theta: f64, steps: usize, seed: u64) -> Result<Estimate> {
    let (critic, mut rng) = train_to_separate(Algo::WganGp, theta, steps, seed)?;
    let (real, fake) = (
        line(0.0, 8192, &mut rng),
        line(theta, 8192, &mut rng).requires_grad_(true),
    );
    let fake_scores = critic.forward(&fake);
    let divergence = critic.forward(&real).mean().item() - fake_scores.mean().item();
    let generator_loss = fake_scores.mean().neg();
    Ok(Estimate {
        divergence,
        generator_gradient: theta_gradient(&generator_loss, &fake),
    })
}

/// Train a GAN discriminator (logits, binary cross-entropy) to separate the lines: at its
/// optimum `log 2 + (E log D(P0) + E log(1 - D(P_theta))) / 2` is JS; the gradient is that of
/// the minimax generator loss `E log(1 - D(theta, Z))`, the one whose saturation the WGAN paper
/// is about.
pub fn discriminator_estimate(theta: f64, steps: usize, seed: u64) -> Result<Estimate> {
    let (discriminator, mut rng) = train_to_separate(Algo::Gan, theta, steps, seed)?;
    let (real, fake) = (
        line(0.0, 8192, &mut rng),
        line(theta, 8192, &mut rng).requires_grad_(true),
    );
    let (r, f) = (discriminator.forward(&real), discriminator.forward(&fake));
    // -BCE(logit, 1) = log D, -BCE(logit, 0) = log(1 - D).
    let log_d_real = r.binary_cross_entropy_with_logits(&r.ones_like()).neg().item();
    let log_one_minus_d_fake = f.binary_cross_entropy_with_logits(&f.zeros_like()).neg();
    Ok(Estimate {
        divergence: LN_2 + 0.5 * (log_d_real + log_one_minus_d_fake.item()),
        generator_gradient: theta_gradient(&log_one_minus_d_fake, &fake),
    })
}

/// d loss / d theta for points `(theta, z)`: every point's x-coordinate is theta, so the
/// derivative is the sum of the loss's gradients along x.
fn theta_gradient(loss: &Tensor, points: &Tensor) -> f64 {
    let g = grad(&[loss], &[points], None, false).remove(0).to_vec_f64();
    g.chunks(2).map(|xy| xy[0]).sum()
}

/// The trained estimates at one theta.
struct Row {
    theta: f64,
    critic: Estimate,
    disc: Estimate,
}

pub fn parallel_lines(out: &Path, steps: usize) -> Result<()> {
    ensure_writable_dir(out)?;
    let thetas: Vec<f64> = (-10..=10).map(|i| i as f64 / 10.0).collect();
    let mut rows = Vec::new();
    println!(
        "| theta | TV | KL | JS | W | critic's W | discriminator's JS | grad from critic | grad from discriminator |"
    );
    println!("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    for (i, &theta) in thetas.iter().enumerate() {
        let exact = closed_forms(theta);
        let critic = critic_estimate(theta, steps, 100 + i as u64)?;
        let disc = discriminator_estimate(theta, steps, 200 + i as u64)?;
        println!(
            "| {theta:.1} | {} | {} | {:.4} | {:.2} | {:.3} | {:.4} | {:+.3} | {:+.2e} |",
            exact.total_variation,
            exact.kl,
            exact.js,
            exact.wasserstein,
            critic.divergence,
            disc.divergence,
            critic.generator_gradient,
            disc.generator_gradient
        );
        rows.push(Row { theta, critic, disc });
    }
    let series = |name: &str, color, f: fn(&Row) -> f64| Series {
        name: name.to_string(),
        points: rows.iter().map(|r| (r.theta, f(r))).collect(),
        color,
    };
    // The closed forms on a fine grid, so that their jump at 0 shows as a jump.
    let exact = |name: &str, color, f: fn(ClosedForms) -> f64| Series {
        name: name.to_string(),
        points: (-200..=200)
            .map(|i| i as f64 / 200.0)
            .map(|t| (t, f(closed_forms(t))))
            .collect(),
        color,
    };
    // KL is infinite off theta = 0: drawn at the top of the axis.
    const KL_TOP: f64 = 1.3;
    let figure = panels(
        &[
            Panel {
                title: "distance between P0 and P_theta".into(),
                x_label: "theta".into(),
                y_label: "distance".into(),
                series: vec![
                    series("critic's estimate of W", (120, 170, 255), |r| r.critic.divergence),
                    exact("W = |theta|", (30, 80, 200), |c| c.wasserstein),
                    series("discriminator's estimate of JS", (250, 160, 120), |r| r.disc.divergence),
                    exact("JS", (220, 60, 30), |c| c.js),
                    exact("TV", (40, 150, 60), |c| c.total_variation),
                    exact("KL (+inf, drawn at 1.3)", (150, 150, 150), |c| c.kl.min(KL_TOP)),
                ],
            },
            Panel {
                title: "gradient a generator at theta receives".into(),
                x_label: "theta".into(),
                y_label: "d(generator loss)/d(theta)".into(),
                series: vec![
                    series("from the WGAN-GP critic", (30, 80, 200), |r| {
                        r.critic.generator_gradient
                    }),
                    series("from the GAN discriminator (minimax)", (220, 60, 30), |r| {
                        r.disc.generator_gradient
                    }),
                ],
            },
        ],
        2,
        (1400, 560),
    )
    .map_err(Error)?;
    let path = out.join("parallel-lines.png");
    write_atomic(&path, &figure)?;
    eprintln!("wrote {}", path.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closed_forms_match_the_paper() {
        let c = closed_forms(0.5);
        assert_eq!((c.total_variation, c.js, c.wasserstein), (1.0, LN_2, 0.5));
        assert!(c.kl.is_infinite());
        let c = closed_forms(-0.25);
        assert_eq!(c.wasserstein, 0.25);
        assert_eq!(closed_forms(0.0).kl, 0.0);
    }

    #[test]
    fn a_trained_critic_recovers_w_and_pulls_the_generator_towards_zero() {
        let e = critic_estimate(0.6, 300, 1).unwrap();
        assert!((e.divergence - 0.6).abs() < 0.1, "{e:?}");
        // The generator at +0.6 is told to decrease theta: d loss/d theta is about +1, the
        // critic's slope.
        assert!(e.generator_gradient > 0.5, "{e:?}");
    }

    #[test]
    fn a_trained_discriminator_sees_js_near_log_two() {
        let e = discriminator_estimate(0.6, 300, 1).unwrap();
        assert!((e.divergence - LN_2).abs() < 0.05, "{e:?}");
    }
}
