use earthmover_wgan::data::{Mnist, MNIST_FILES};
use earthmover_wgan::train::{Algo, TrainConfig, Trainer};
use std::time::Instant;
fn main() {
    let dir = std::path::Path::new("../shared/data/mnist");
    let data = Mnist::load_dir(dir).unwrap();
    let _ = MNIST_FILES;
    let args: Vec<String> = std::env::args().collect();
    let dim: usize = args[1].parse().unwrap();
    let algo: Algo = args[2].parse().unwrap();
    let mut cfg = TrainConfig::new(algo);
    cfg.dim = dim;
    cfg.critic_warmup = false;
    let mut t = Trainer::new(cfg, data.train.len()).unwrap();
    for i in 0..4 {
        let s = Instant::now();
        let log = t.step(&data).unwrap();
        println!("iter {i}: {:.3}s  {:?}", s.elapsed().as_secs_f64(), log.wasserstein);
    }
}
