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
use earthmover_wgan::train::{Algo, Precision, TrainConfig};
use std::path::PathBuf;
use std::process::ExitCode;

/// Train Wasserstein GANs on MNIST with earthmover.
#[derive(Parser, Debug)]
// Negative numbers are values (`--lr -1` reaches the check that names the flag), not flags.
#[command(
    version,
    about,
    args_conflicts_with_subcommands = true,
    allow_negative_numbers = true
)]
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
    #[command(allow_negative_numbers = true)]
    Train(Box<TrainArgs>),
    /// Draw digits from a trained generator into a PNG grid.
    Sample(SampleArgs),
    /// Measure a trained generator's samples: classifier score, Frechet distance, mode coverage.
    Eval(EvalArgs),
    /// Train the digit classifier behind the quality metrics.
    TrainClassifier(ClassifierArgs),
    /// Write a trained generator as a generator file in another dtype (bf16 or f16: half the
    /// size), for `sample`, `eval` and PyTorch.
    Export(ExportArgs),
}

#[derive(Args, Debug)]
struct ExportArgs {
    /// A training checkpoint or generator file.
    #[arg(long, value_name = "FILE")]
    checkpoint: PathBuf,
    /// The dtype of the written weights: f32, bf16, f16 or f64.
    #[arg(long, default_value = "bf16")]
    dtype: earthmover_tensor::DType,
    /// The generator file to write.
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
}

#[derive(Args, Debug)]
pub struct EvalArgs {
    /// A training checkpoint or generator file.
    #[arg(long, value_name = "FILE")]
    pub checkpoint: PathBuf,
    /// How many samples to score.
    #[arg(long, default_value_t = 10_000)]
    pub n: usize,
    /// Seed of the noise.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// The images to compare with: a folder of the four MNIST-format IDX files (default: the
    /// built-in digits).
    #[arg(long, value_name = "DIR")]
    pub data: Option<PathBuf>,
    /// The classifier that scores the samples, trained on the same kind of images with
    /// `train-classifier --data DIR` (default: the built-in digit classifier; on other data,
    /// its features alone, for the Frechet distance).
    #[arg(long, value_name = "FILE")]
    pub classifier: Option<PathBuf>,
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

/// Flags left unset take the chosen algorithm's defaults; `--help` shows each (from the code
/// that applies them, so that the two cannot disagree).
#[derive(Args, Debug, Clone, Default)]
pub struct TrainArgs {
    #[arg(long, value_parser = parse_with::<Algo>, help = with_default(
        "Objective: wgan (clipping + RMSProp), wgan-gp (gradient penalty + Adam), gan (standard)",
        train::DEFAULT_ALGO.to_string(),
    ))]
    pub algo: Option<Algo>,
    #[arg(long, value_parser = parse_with::<ModelKind>, help = with_default(
        "Networks: dcgan (convolutional, the WGAN-GP paper's) or mlp (fully connected)",
        by_algo(|c| c.model.to_string()),
    ))]
    pub model: Option<ModelKind>,
    #[arg(long, help = with_default(
        "Width of the DCGAN networks (the paper's DIM is 64)",
        by_algo(|c| c.dim.to_string()),
    ))]
    pub dim: Option<usize>,
    #[arg(long, value_parser = parse_with::<CriticNorm>, help = with_default(
        "Critic normalisation: none, layer, or batch (not with wgan-gp)",
        by_algo(|c| c.critic_norm.to_string()),
    ))]
    pub critic_norm: Option<CriticNorm>,
    #[arg(long, value_parser = parse_with::<Init>, help = with_default(
        "Weight initialisation: pytorch (PyTorch's defaults) or dcgan (normal(0, 0.02))",
        by_algo(|c| c.init.to_string()),
    ))]
    pub init: Option<Init>,
    #[arg(long, help = with_default("Generator iterations to train for", by_algo(|c| c.iters.to_string())))]
    pub iters: Option<usize>,
    #[arg(long, help = with_default("Images per batch", by_algo(|c| c.batch_size.to_string())))]
    pub batch_size: Option<usize>,
    #[arg(long, help = with_default("Critic steps per generator step", by_algo(|c| c.n_critic.to_string())))]
    pub n_critic: Option<usize>,
    #[arg(long, help = with_default("Learning rate of both networks", by_algo(|c| c.lr.to_string())))]
    pub lr: Option<f64>,
    #[arg(long, help = with_default(
        "The critic's learning rate, where it should differ from the generator's (two time-scale updates)",
        "--lr".to_string(),
    ))]
    pub lr_critic: Option<f64>,
    #[arg(long, help = with_default("The generator's learning rate", "--lr".to_string()))]
    pub lr_gen: Option<f64>,
    #[arg(long, value_parser = parse_betas, help = with_default(
        "Adam's betas as `b1,b2` (wgan-gp and gan; wgan's RMSProp has none)",
        by_algo(|c| match c.algo {
            Algo::Wgan => "none".to_string(),
            _ => format!("{},{}", c.betas.0, c.betas.1),
        }),
    ))]
    pub betas: Option<(f64, f64)>,
    #[arg(long, help = with_default(
        "Weight-clipping bound c (wgan only)",
        by_algo(|c| c.clip.to_string()),
    ))]
    pub clip: Option<f64>,
    #[arg(long, help = with_default(
        "Gradient-penalty weight lambda (wgan-gp only)",
        by_algo(|c| c.lambda.to_string()),
    ))]
    pub lambda: Option<f64>,
    #[arg(long, value_name = "DECAY|off", value_parser = parse_ema, help = with_default(
        "Keep an exponential moving average of the generator's weights with this decay (warmed up as \
         TensorFlow's) and draw, score and export samples from it; the checkpoint keeps the trained \
         weights too. `off`: no average",
        by_algo(|c| c.ema.map_or("off".to_string(), |d| d.to_string())),
    ))]
    pub ema: Option<EmaFlag>,
    #[arg(long, value_name = "f32|bf16|f16", help = with_default(
        "What the networks' convolutions and matrix products compute in: `bf16` and `f16` are mixed \
         precision (the weights, their gradients, the optimisers, the losses and the penalty's norms \
         stay f32); `f16` also scales each network's loss dynamically (a step with an inf or NaN \
         gradient is skipped and its scale halved; the scales and skipped steps go to metrics.csv; \
         docs/training.md)",
        by_algo(|c| c.precision.to_string()),
    ))]
    pub precision: Option<Precision>,
    /// Start from the papers' settings for `--algo` instead of the measured defaults (wgan-gp: lr
    /// 1e-4, betas 0,0.9, no weight average); width and length stay this program's, and the other
    /// flags still override
    #[arg(long)]
    pub paper: bool,
    #[arg(long, help = with_default(
        "Turn off the critic's warm-up, WGAN's 100 critic steps for the first 25 generator iterations and every 500th",
        by_algo(|c| if c.critic_warmup { "warm-up on".to_string() } else { "warm-up off".to_string() }),
    ))]
    pub no_critic_warmup: bool,
    #[arg(long, help = with_default("Random seed: the same seed gives the same run", by_algo(|c| c.seed.to_string())))]
    pub seed: Option<u64>,
    /// A folder with the four MNIST-format IDX files [default: the 10,000 digits built in]
    #[arg(long, value_name = "DIR")]
    pub data: Option<PathBuf>,
    /// Download the full MNIST into DIR (checking SHA-256 sums) and train on it.
    #[arg(long, value_name = "DIR", conflicts_with = "data")]
    pub download: Option<PathBuf>,
    /// The mirror to download from.
    #[arg(long, value_name = "URL", default_value = download::DEFAULT_MIRROR, hide = true)]
    pub mirror: String,
    /// Stop once training has taken this many seconds (this process and, when resumed, the
    /// earlier ones), finishing as at the last iteration: samples, scores, checkpoint.
    #[arg(long, value_name = "SECONDS")]
    pub max_seconds: Option<f64>,
    /// Output folder for samples, metrics, plots and checkpoints [default: runs/wgan-mnist (or
    /// runs/wgan-mnist-2, -3, ... where it holds an earlier run); with --resume, the
    /// checkpoint's folder]. A folder given that holds another run is refused (see --overwrite)
    #[arg(long = "out", value_name = "DIR")]
    pub out_flag: Option<PathBuf>,
    /// The output folder: `--out`, or its default (set by `train::train`).
    #[arg(skip)]
    pub out: PathBuf,
    /// Start this run in an --out folder that holds another, deleting that run's checkpoint,
    /// generator, logs, plots and sample grids first
    #[arg(long)]
    pub overwrite: bool,
    /// Where to compute: auto (the first GPU when one works, else the CPU), cpu, cuda, cuda:N.
    #[arg(long, default_value = "auto")]
    pub device: String,
    /// Capture each iteration as a CUDA graph once and replay it: one launch per iteration
    /// instead of hundreds, the same results bit for bit (docs/device-counters.md). For a CUDA
    /// device in f32 or bf16; not yet run on a GPU.
    #[arg(long)]
    pub cuda_graph: bool,
    /// Continue from a checkpoint; its settings then rule, and `--iters` may extend it.
    #[arg(long, value_name = "CHECKPOINT")]
    pub resume: Option<PathBuf>,
    /// Save a sample grid every this many iterations.
    #[arg(long, default_value_t = 250)]
    pub sample_every: usize,
    /// Save a checkpoint every this many iterations.
    #[arg(long, default_value_t = 500)]
    pub checkpoint_every: usize,
    #[arg(long, help = with_default(
        "Estimate the Wasserstein distance on test images every this many iterations",
        by_algo(|c| c.test_every.to_string()),
    ))]
    pub test_every: Option<usize>,
    /// Score samples with the digit classifier (classifier score, Frechet distance, class
    /// coverage) every this many iterations, into metrics.csv and quality.png; 0 turns it off.
    #[arg(long, default_value_t = 500)]
    pub eval_every: usize,
    /// How many samples each of those evaluations scores.
    #[arg(long, default_value_t = 10_000)]
    pub eval_samples: usize,
    /// The classifier that scores samples, trained on the run's kind of images with
    /// `train-classifier --data DIR` [default: the built-in digit classifier; with `--data`,
    /// its features alone, for the Frechet distance]
    #[arg(long, value_name = "FILE")]
    pub classifier: Option<PathBuf>,
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

/// `help` followed by its default, as clap prints the defaults it knows.
fn with_default(help: &str, default: String) -> String {
    format!("{help} [default: {default}]")
}

/// A setting's default for each algorithm: one value when they agree, else one per algorithm
/// (the default algorithm first).
fn by_algo(value: impl Fn(&TrainConfig) -> String) -> String {
    let algos = [Algo::WganGp, Algo::Wgan, Algo::Gan];
    let values: Vec<String> = algos.iter().map(|&a| value(&train::defaults(a))).collect();
    if values.iter().all(|v| *v == values[0]) {
        return values[0].clone();
    }
    let per_algo: Vec<String> = algos.iter().zip(&values).map(|(a, v)| format!("{a}: {v}")).collect();
    per_algo.join(", ")
}

fn parse_with<T: std::str::FromStr<Err = String>>(s: &str) -> Result<T, String> {
    s.parse()
}

/// `--ema`: a decay, or `off` for no average (`EmaFlag(None)`), so that a default average can be
/// turned off.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct EmaFlag(pub Option<f64>);

fn parse_ema(s: &str) -> Result<EmaFlag, String> {
    if s == "off" {
        return Ok(EmaFlag(None));
    }
    match s.parse::<f64>() {
        Ok(decay) => Ok(EmaFlag(Some(decay))),
        Err(_) => Err(format!("expected a decay such as 0.999, or `off`, got `{s}`")),
    }
}

fn parse_betas(s: &str) -> Result<(f64, f64), String> {
    let parts: Vec<&str> = s.split(',').collect();
    let parse = |p: &str| p.trim().parse::<f64>().map_err(|_| format!("`{p}` is not a number"));
    match parts.as_slice() {
        [a, b] => Ok((parse(a)?, parse(b)?)),
        _ => Err(format!("betas must be two numbers `b1,b2`, got `{s}`")),
    }
}

/// The `export` command: the generator of `args.checkpoint` in `args.dtype`, and the sizes.
fn export(args: &ExportArgs) -> earthmover_wgan::Result<()> {
    earthmover_wgan::checkpoint::export_generator(&args.checkpoint, args.dtype, &args.out)?;
    let size = |p: &std::path::Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    println!(
        "wrote the generator of {} in {} to {} ({} bytes; the source file has {})",
        args.checkpoint.display(),
        args.dtype,
        args.out.display(),
        size(&args.out),
        size(&args.checkpoint)
    );
    Ok(())
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
    // Denormal floats cost the CPU a microcode assist each, and a WGAN-GP run meets more of
    // them the longer it trains: flushed to zero unless EARTHMOVER_FLUSH_DENORMAL=0 (a
    // process-wide setting, so the program makes it, not the library).
    if let Err(e) = earthmover_tensor::configure_flush_denormal(true) {
        eprintln!("error: {e}");
        return ExitCode::FAILURE;
    }
    let result = match cli.command {
        Some(Command::Train(args)) => train::train(*args),
        None => train::train(cli.train),
        Some(Command::Sample(args)) => sample::sample(&args.checkpoint, args.n, &args.out, args.seed),
        Some(Command::Eval(args)) => eval::eval(&args),
        Some(Command::Export(args)) => export(&args),
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
