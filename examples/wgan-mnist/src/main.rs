//! `wgan-mnist`: train WGAN, WGAN-GP or a standard GAN on MNIST, and draw samples from a
//! trained generator. Each command has its module (`train`, `sample`, `eval`, `classifier`);
//! `outputs` holds what a training run writes, `quality` the classifier that scores samples.

mod classifier;
mod download;
mod embedded;
mod eval;
mod outputs;
mod quality;
mod sample;
mod train;

use clap::{Args, Parser, Subcommand};
use earthmover_wgan::models::{CriticNorm, ModelKind};
use earthmover_wgan::nn::init::Init;
use earthmover_wgan::train::Algo;
use std::path::PathBuf;
use std::process::ExitCode;

/// Train Wasserstein GANs on MNIST with earthmover.
#[derive(Parser, Debug)]
#[command(version, about, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// `train` is the default command: its flags may be given without it.
    #[command(flatten)]
    train: TrainArgs,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Train a GAN (the default).
    Train(Box<TrainArgs>),
    /// Draw digits from a trained generator into a PNG grid.
    Sample(SampleArgs),
    /// Measure a trained generator's samples: classifier score, Frechet distance, mode coverage.
    Eval(EvalArgs),
    /// Train the digit classifier behind the quality metrics.
    TrainClassifier(ClassifierArgs),
}

#[derive(Args, Debug)]
struct EvalArgs {
    /// A training checkpoint or generator file.
    #[arg(long, value_name = "FILE")]
    checkpoint: PathBuf,
    /// How many samples to score.
    #[arg(long, default_value_t = 10_000)]
    n: usize,
    /// Seed of the noise.
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

#[derive(Args, Debug)]
struct ClassifierArgs {
    /// Passes over the training split.
    #[arg(long, default_value_t = 20)]
    epochs: usize,
    /// Where to write the weights (safetensors).
    #[arg(long, value_name = "FILE", default_value = "data/classifier/mnist-cnn.safetensors")]
    out: PathBuf,
    /// A folder with the four MNIST-format IDX files (default: the built-in digits).
    #[arg(long, value_name = "DIR")]
    data: Option<PathBuf>,
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

/// Flags left unset take the chosen algorithm's published defaults.
#[derive(Args, Debug, Clone, Default)]
pub struct TrainArgs {
    /// Objective: wgan (clipping + RMSProp), wgan-gp (gradient penalty + Adam), gan (standard).
    #[arg(long, value_parser = parse_with::<Algo>)]
    pub algo: Option<Algo>,
    /// Networks: dcgan (convolutional, the WGAN-GP paper's) or mlp (fully connected).
    #[arg(long, value_parser = parse_with::<ModelKind>)]
    pub model: Option<ModelKind>,
    /// Width of the DCGAN networks (the paper's DIM is 64).
    #[arg(long)]
    pub dim: Option<usize>,
    /// Critic normalisation: none, layer, or batch (not with wgan-gp).
    #[arg(long, value_parser = parse_with::<CriticNorm>)]
    pub critic_norm: Option<CriticNorm>,
    /// Weight initialisation: pytorch (PyTorch's defaults) or dcgan (normal(0, 0.02)).
    #[arg(long, value_parser = parse_with::<Init>)]
    pub init: Option<Init>,
    /// Generator iterations to train for.
    #[arg(long)]
    pub iters: Option<usize>,
    /// Images per batch.
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Critic steps per generator step.
    #[arg(long)]
    pub n_critic: Option<usize>,
    /// Learning rate of both networks.
    #[arg(long)]
    pub lr: Option<f64>,
    /// Adam's betas as `b1,b2` (wgan-gp: 0,0.9; gan: 0.5,0.999).
    #[arg(long, value_parser = parse_betas)]
    pub betas: Option<(f64, f64)>,
    /// Weight-clipping bound c (wgan).
    #[arg(long)]
    pub clip: Option<f64>,
    /// Gradient-penalty weight lambda (wgan-gp).
    #[arg(long)]
    pub lambda: Option<f64>,
    /// Turn off WGAN's 100 critic steps for the first 25 generator iterations and every 500th.
    #[arg(long)]
    pub no_critic_warmup: bool,
    /// Random seed: the same seed gives the same run.
    #[arg(long)]
    pub seed: Option<u64>,
    /// A folder with the four MNIST-format IDX files (default: the 10,000 digits built in).
    #[arg(long, value_name = "DIR")]
    pub data: Option<PathBuf>,
    /// Download the full MNIST into DIR (checking SHA-256 sums) and train on it.
    #[arg(long, value_name = "DIR", conflicts_with = "data")]
    pub download: Option<PathBuf>,
    /// The mirror to download from.
    #[arg(long, value_name = "URL", default_value = download::DEFAULT_MIRROR, hide = true)]
    pub mirror: String,
    /// Output folder for samples, metrics, plots and checkpoints.
    #[arg(long, value_name = "DIR", default_value = "runs/wgan-mnist")]
    pub out: PathBuf,
    /// Where to compute: auto (the first GPU when one works, else the CPU), cpu, cuda, cuda:N.
    #[arg(long, default_value = "auto")]
    pub device: String,
    /// Continue from a checkpoint.
    #[arg(long, value_name = "CHECKPOINT")]
    pub resume: Option<PathBuf>,
    /// Save a sample grid every this many iterations.
    #[arg(long, default_value_t = 250)]
    pub sample_every: usize,
    /// Save a checkpoint every this many iterations.
    #[arg(long, default_value_t = 500)]
    pub checkpoint_every: usize,
    /// Estimate the Wasserstein distance on test images every this many iterations.
    #[arg(long)]
    pub test_every: Option<usize>,
    /// Score samples with the digit classifier (classifier score, Frechet distance, class
    /// coverage) every this many iterations, into metrics.csv and quality.png; 0 turns it off.
    #[arg(long, default_value_t = 500)]
    pub eval_every: usize,
    /// How many samples each of those evaluations scores.
    #[arg(long, default_value_t = 10_000)]
    pub eval_samples: usize,
    /// No progress bar; print a line at every sample instead.
    #[arg(long)]
    pub quiet: bool,
}

#[derive(Args, Debug)]
struct SampleArgs {
    /// A training checkpoint or generator file.
    #[arg(long, value_name = "FILE")]
    checkpoint: PathBuf,
    /// How many digits.
    #[arg(long, default_value_t = 64)]
    n: usize,
    /// The PNG file to write.
    #[arg(long, value_name = "FILE", default_value = "samples.png")]
    out: PathBuf,
    /// Seed of the noise.
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

fn parse_with<T: std::str::FromStr<Err = String>>(s: &str) -> Result<T, String> {
    s.parse()
}

fn parse_betas(s: &str) -> Result<(f64, f64), String> {
    let parts: Vec<&str> = s.split(',').collect();
    let parse = |p: &str| p.trim().parse::<f64>().map_err(|_| format!("`{p}` is not a number"));
    match parts.as_slice() {
        [a, b] => Ok((parse(a)?, parse(b)?)),
        _ => Err(format!("betas must be two numbers `b1,b2`, got `{s}`")),
    }
}

fn main() -> ExitCode {
    // A training step frees and allocates the same large tensors every step: keep freed memory
    // in the process for reuse rather than handing it back to the system (a process-wide malloc
    // setting, so the program makes it, not the library).
    earthmover_tensor::retain_freed_memory();
    let cli = Cli::parse();
    // A bad EARTHMOVER_SIMD is refused here, before any work, rather than worked around.
    if let Err(e) = earthmover_tensor::cpu_simd_path() {
        eprintln!("error: {e}");
        return ExitCode::FAILURE;
    }
    let result = match cli.command {
        Some(Command::Train(args)) => train::train(*args),
        None => train::train(cli.train),
        Some(Command::Sample(args)) => sample::sample(&args.checkpoint, args.n, &args.out, args.seed),
        Some(Command::Eval(args)) => eval::eval(&args.checkpoint, args.n, args.seed),
        Some(Command::TrainClassifier(args)) => {
            classifier::train_classifier(args.epochs, &args.out, args.data.as_deref(), args.seed)
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
