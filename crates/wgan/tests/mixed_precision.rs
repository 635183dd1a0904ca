//! Mixed precision (`TrainConfig::precision`, `--precision bf16`): a short WGAN-GP run whose
//! convolutions and matrix products compute in bf16 tracks the same run in f32, and keeps its
//! weights, gradients and optimiser state in f32.

use earthmover_tensor::DType;
use earthmover_wgan::data::Mnist;
use earthmover_wgan::nn::Module;
use earthmover_wgan::train::{Algo, Precision, TrainConfig, Trainer};

#[test]
fn a_bf16_wgan_gp_run_tracks_the_f32_run_and_keeps_f32_masters() {
    let data = Mnist::synthetic(64);
    let mut config = TrainConfig::new(Algo::WganGp);
    (config.dim, config.batch_size, config.n_critic, config.iters) = (8, 16, 2, 8);
    config.ema = Some(0.9);
    let mut f32_run = Trainer::new(config.clone(), data.train.len()).unwrap();
    config.precision = Precision::Bf16;
    let mut bf16_run = Trainer::new(config, data.train.len()).unwrap();
    for iteration in 1..=8 {
        let (a, b) = (f32_run.step(&data).unwrap(), bf16_run.step(&data).unwrap());
        // bf16 keeps 8 bits: each product rounds by up to 2^-9, and the runs drift apart
        // slowly from there. A broken cast (a product left in f32 is not an error, but a lost
        // gradient or a loss reduced in bf16 is) moves these by far more.
        for (what, x, y) in [
            ("critic loss", a.critic_loss, b.critic_loss),
            ("wasserstein", a.wasserstein, b.wasserstein),
            ("penalty", a.penalty, b.penalty),
            ("grad norm", a.grad_norm, b.grad_norm),
            ("generator loss", a.generator_loss, b.generator_loss),
        ] {
            let tolerance = 0.02 * (1.0 + x.abs());
            assert!(
                (x - y).abs() <= tolerance,
                "iteration {iteration}, {what}: f32 {x}, bf16 {y}"
            );
        }
    }
    for (what, net) in [
        ("generator", &bf16_run.generator as &dyn Module),
        ("critic", &bf16_run.critic),
        ("average", bf16_run.generator_ema.as_ref().unwrap()),
    ] {
        for (name, t) in net.state_dict() {
            assert_eq!(t.dtype(), DType::F32, "{what}: {name}");
            if let Some(g) = t.grad() {
                assert_eq!(g.dtype(), DType::F32, "{what}: {name}'s gradient");
            }
        }
    }
    // The weights did move apart, a little: the bf16 run is not the f32 run by accident.
    let (w32, w16) = (
        f32_run.critic.parameters()[0].to_vec_f64(),
        bf16_run.critic.parameters()[0].to_vec_f64(),
    );
    assert!(w32 != w16, "the bf16 run computed nothing in bf16");
}
