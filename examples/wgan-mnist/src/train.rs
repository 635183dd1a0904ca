//! The `train` command, in named steps: check the flags, load the data, resume or start a run,
//! set up its outputs, train it (progress bar, logs, pictures, checkpoints) until done or
//! interrupted, and finish.

use crate::download;
use crate::outputs::{lock_output_folder, Outputs, CHECKPOINT, METRICS, RUN_FILES, SAMPLES, SAMPLE_PREFIX, SETTINGS};
use crate::quality::{self, QualityProbe, Ruler};
use crate::{EmaFlag, TrainArgs};
use earthmover_tensor::{cuda_device_count, device_name, Device};
use earthmover_wgan::checkpoint::load_checkpoint;
use earthmover_wgan::data::Mnist;
use earthmover_wgan::history;
use earthmover_wgan::io::{ensure_writable_dir, write_atomic, DirLock};
use earthmover_wgan::models::Generator;
use earthmover_wgan::train::{Algo, IterationLog, Precision, TrainConfig, Trainer};
use earthmover_wgan::{bail, Error, Result};
use indicatif::{ProgressBar, ProgressState, ProgressStyle};
use rand::rngs::StdRng;
use rand::SeedableRng;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// WGAN-GP's generator iterations when none are given: 15 minutes of training (quality
/// measurements included) at its default settings on a 2-core Intel Xeon, as measured in a whole
/// run (docs/training.md "Choosing the defaults"; later iterations run slower than the first).
pub const DEFAULT_WGAN_GP_ITERS: usize = 7_000;
/// WGAN's and GAN's iterations when none are given (not swept: a first look in minutes).
pub const DEFAULT_ITERS: usize = 2000;
/// DCGAN width when none is given (the paper's is 64).
pub const DEFAULT_DIM: usize = 32;
/// WGAN-GP's critic steps per generator step when none are given (the paper's is 5: fewer, at
/// the same time per step, bought more generator steps for 15 minutes, and better digits).
pub const DEFAULT_WGAN_GP_N_CRITIC: usize = 2;

/// Train a run as the flags say, or resume one; see the module documentation for the steps.
pub fn train(mut args: TrainArgs) -> Result<()> {
    args.out = output_folder(&args);
    let device = resolve_device(&args.device)?;
    check_output_flags(&args)?;
    let (data, source) = load_data(&args)?;
    // The settings are checked (and a checkpoint read) before the folder is made or locked:
    // bad flags leave nothing behind.
    let mut trainer = resume_or_start(&args, data.train.len())?;
    // Before anything is written into the folder: a second run there is refused, not mixed in.
    let lock = lock_output_folder(&args.out)?;
    check_folder_holds_no_other_run(&args)?;
    // Before the trainer starts its clock: the set-up is not training time.
    let quality_probe = if args.eval_every > 0 {
        // The built-in and the downloaded data are MNIST's digits; a folder may hold anything.
        let ruler = Ruler::choose(args.classifier.as_deref(), args.data.is_none());
        Some(QualityProbe::new(&data, ruler)?)
    } else {
        None
    };
    let outputs = set_up_outputs(&args, &trainer.config, quality_probe, lock)?;
    trainer.to_device(device)?;
    if args.cuda_graph {
        trainer
            .use_cuda_graphs()
            .map_err(|e| Error(format!("--cuda-graph: {}", e.0)))?;
    }
    write_settings(
        &args,
        &trainer.config,
        &data,
        &source,
        device,
        outputs.quality_probe.as_ref(),
    )?;
    let rows = match &args.resume {
        Some(_) => read_metrics(&outputs.dir.join(METRICS), trainer.iteration)?,
        None => Vec::new(),
    };
    let interrupted = interrupt_flag();
    let precision = describe_precision(&trainer);
    let config = &trainer.config;
    // The header first, then the bar, which redraws itself below it.
    eprintln!(
        "training {} with the {} networks (dim {}, {}), batch {}, {} iterations, data: {source}, on {}",
        config.algo,
        config.model,
        config.dim,
        precision,
        config.batch_size,
        config.iters,
        describe_device(device)?
            + if trainer.uses_cuda_graphs() {
                ", iterations replayed as CUDA graphs"
            } else {
                ""
            }
    );
    let bar = progress_bar(&args, config, trainer.iteration);
    // The set-up above (the checkpoint, the quality probe, the device) is not training time.
    trainer.start_clock();
    let trainer_seconds = trainer.seconds();
    let mut run = Run {
        args: &args,
        data: &data,
        outputs,
        start_iteration: trainer.iteration,
        trainer,
        rows,
        bar,
        // A resumed run whose earlier processes already used up --max-seconds trains no more.
        out_of_time: args.max_seconds.is_some_and(|limit| trainer_seconds >= limit),
    };
    while run.trainer.iteration < run.trainer.config.iters && !run.out_of_time {
        if interrupted.load(Ordering::SeqCst) {
            return run.save_interrupted();
        }
        run.iteration()?;
    }
    run.finish()
}

/// Where the run writes: `--out`; without it, the checkpoint's folder when resuming (so that
/// the run goes on where it was), else `runs/wgan-mnist`, or where that holds an earlier run
/// (and `--overwrite` is not given), the first of `runs/wgan-mnist-2`, `-3`, ... that holds
/// none, so that the README's commands run one after another, each into a folder of its own.
fn output_folder(args: &TrainArgs) -> PathBuf {
    match (&args.out_flag, &args.resume) {
        (Some(dir), _) => dir.clone(),
        (None, Some(checkpoint)) => checkpoint
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .map_or_else(|| PathBuf::from("."), Path::to_path_buf),
        (None, None) if args.overwrite => PathBuf::from(DEFAULT_OUT),
        (None, None) => {
            let free = (1..)
                .map(|n| match n {
                    1 => PathBuf::from(DEFAULT_OUT),
                    n => PathBuf::from(format!("{DEFAULT_OUT}-{n}")),
                })
                .find(|dir| !dir.join(CHECKPOINT).exists())
                .expect("some numbered folder is free");
            if free != Path::new(DEFAULT_OUT) {
                eprintln!(
                    "note: {DEFAULT_OUT} holds an earlier run; this one goes to {} (--out chooses)",
                    free.display()
                );
            }
            free
        }
    }
}

/// The output folder when none is given and no checkpoint is resumed.
pub const DEFAULT_OUT: &str = "runs/wgan-mnist";

/// Refuses a folder that holds another run's checkpoint (a new run there would overwrite it and
/// leave its sample grids among the new ones; a resumed one would mix the two runs' logs),
/// unless it is the checkpoint being resumed or `--overwrite` clears that run first.
fn check_folder_holds_no_other_run(args: &TrainArgs) -> Result<()> {
    let existing = args.out.join(CHECKPOINT);
    if !existing.exists() {
        return Ok(());
    }
    let same_file = |a: &Path, b: &Path| match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    };
    if args
        .resume
        .as_deref()
        .is_some_and(|resumed| same_file(resumed, &existing))
    {
        return Ok(());
    }
    if args.overwrite {
        return remove_previous_run(&args.out);
    }
    match &args.resume {
        None => bail!(
            "{} already holds a run ({}): continue it with --resume {}, start this one in another --out, \
             or replace that run with --overwrite",
            args.out.display(),
            CHECKPOINT,
            existing.display()
        ),
        Some(resumed) => bail!(
            "--out {} holds another run's checkpoint: resuming {} there would overwrite it and mix the two \
             runs' logs; leave out --out to go on in the checkpoint's folder, give an empty folder, or \
             replace that run with --overwrite",
            args.out.display(),
            resumed.display()
        ),
    }
}

/// Deletes the run `dir` holds (`--overwrite`): its files and sample grids, nothing else.
fn remove_previous_run(dir: &Path) -> Result<()> {
    let remove = |path: &Path| match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(Error(format!("--overwrite: cannot delete {}: {e}", path.display())))
        }
        _ => Ok(()),
    };
    for name in RUN_FILES {
        remove(&dir.join(name))?;
    }
    if let Ok(grids) = std::fs::read_dir(dir.join(SAMPLES)) {
        for entry in grids.flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with(SAMPLE_PREFIX) && name.ends_with(".png") {
                remove(&entry.path())?;
            }
        }
    }
    Ok(())
}

fn check_output_flags(args: &TrainArgs) -> Result<()> {
    if args.sample_every == 0 || args.checkpoint_every == 0 {
        bail!("--sample-every and --checkpoint-every must be at least 1");
    }
    if args.max_seconds.is_some_and(|s| s.is_nan() || s <= 0.0) {
        bail!("--max-seconds must be a positive number of seconds");
    }
    if args.eval_every > 0 && args.eval_samples < 2 {
        bail!("--eval-samples must be at least 2 (the Frechet distance needs a covariance)");
    }
    Ok(())
}

/// The device `--device` names: `cpu`; `cuda` or `cuda:N` (an error when that GPU cannot be
/// used); `auto`, the first GPU when one works, else the CPU with a notice.
fn resolve_device(device: &str) -> Result<Device> {
    let open = |d: Device| -> Result<Device> {
        device_name(d).map_err(|e| Error(format!("--device {device}: {e}")))?;
        Ok(d)
    };
    match device {
        "cpu" => Ok(Device::Cpu),
        "auto" => {
            if cuda_device_count() == 0 {
                eprintln!("note: no CUDA GPU found; training on the CPU");
                return Ok(Device::Cpu);
            }
            match device_name(Device::Cuda(0)) {
                Ok(name) => {
                    eprintln!("training on cuda:0 ({name})");
                    Ok(Device::Cuda(0))
                }
                Err(e) => {
                    eprintln!("note: {e}; training on the CPU");
                    Ok(Device::Cpu)
                }
            }
        }
        "cuda" => open(Device::Cuda(0)),
        // The GPU code path with the kernels run on the CPU: for tests (feature `emulator`).
        "cuda-emulator" => open(Device::CudaEmulator),
        other => match other.strip_prefix("cuda:").and_then(|n| n.parse().ok()) {
            Some(n) => open(Device::Cuda(n)),
            None => bail!("unknown device `{other}`: expected auto, cpu, cuda or cuda:N"),
        },
    }
}

fn load_data(args: &TrainArgs) -> Result<(Mnist, String)> {
    if let Some(dir) = &args.download {
        download::download(dir, &args.mirror, &download::MNIST_SHA256)?;
        return Ok((Mnist::load_dir(dir)?, dir.display().to_string()));
    }
    match &args.data {
        Some(dir) => Ok((Mnist::load_dir(dir)?, dir.display().to_string())),
        None => Ok((crate::embedded::load()?, "built-in (10,000 MNIST digits)".to_string())),
    }
}

/// The algorithm when `--algo` is not given.
pub const DEFAULT_ALGO: Algo = Algo::WganGp;

/// What a run of `algo` trains with when no other flag is given. For WGAN-GP, the best setting
/// of the defaults sweep (`scripts/sweep-defaults.sh`, docs/training.md "Choosing the
/// defaults"): the authors' MNIST script's Adam betas (0.5, 0.9) at lr 2e-4, fewer critic steps
/// and a weight average, which drew far better digits in the same 15 minutes than the paper's
/// Algorithm 1. WGAN and GAN keep their papers' settings (`TrainConfig::new`). All at this
/// program's width and length.
pub fn defaults(algo: Algo) -> TrainConfig {
    let mut c = paper_defaults(algo);
    if algo == Algo::WganGp {
        c.lr = 2e-4;
        c.betas = (0.5, 0.9);
        c.n_critic = DEFAULT_WGAN_GP_N_CRITIC;
        c.ema = Some(0.999);
    }
    c
}

/// What `--paper` starts from: the papers' settings for `algo` (`TrainConfig::new`: WGAN-GP's
/// Algorithm 1 is Adam 1e-4, betas 0, 0.9, n_critic 5, no average) at this program's width and
/// length (the paper's are DIM 64 and 200,000 iterations).
pub fn paper_defaults(algo: Algo) -> TrainConfig {
    let mut c = TrainConfig::new(algo);
    c.dim = DEFAULT_DIM;
    c.iters = match algo {
        Algo::WganGp => DEFAULT_WGAN_GP_ITERS,
        Algo::Wgan | Algo::Gan => DEFAULT_ITERS,
    };
    c
}

/// The configuration of a new run: the algorithm's defaults, overridden by the flags given.
fn new_config(args: &TrainArgs) -> TrainConfig {
    let algo = args.algo.unwrap_or(DEFAULT_ALGO);
    let mut c = if args.paper {
        paper_defaults(algo)
    } else {
        defaults(algo)
    };
    macro_rules! set {
        ($($field:ident),+) => { $(if let Some(v) = args.$field { c.$field = v; })+ };
    }
    set!(
        model,
        dim,
        critic_norm,
        iters,
        batch_size,
        n_critic,
        lr,
        betas,
        clip,
        lambda,
        seed,
        test_every,
        precision
    );
    if args.no_critic_warmup {
        c.critic_warmup = false;
    }
    if let Some(EmaFlag(decay)) = args.ema {
        c.ema = decay;
    }
    c.lr_critic = args.lr_critic.or(c.lr_critic);
    c.lr_generator = args.lr_gen.or(c.lr_generator);
    c.init = args.init.unwrap_or(c.init);
    c
}

/// On resume the checkpoint's configuration rules: a flag that contradicts it is an error,
/// except `--iters`, which may extend the run.
fn check_resume_flags(args: &TrainArgs, saved: &TrainConfig) -> Result<()> {
    macro_rules! same {
        ($($field:ident),+) => {$(
            if let Some(v) = &args.$field {
                if *v != saved.$field {
                    bail!(
                        "--{} {:?} contradicts the checkpoint, which was trained with {:?}; drop the flag to resume",
                        stringify!($field).replace('_', "-"), v, saved.$field
                    );
                }
            }
        )+};
    }
    same!(
        algo,
        model,
        dim,
        critic_norm,
        init,
        batch_size,
        n_critic,
        lr,
        betas,
        clip,
        lambda,
        seed,
        test_every,
        precision
    );
    for (flag, given, saved) in [
        ("--lr-critic", args.lr_critic, saved.critic_lr()),
        ("--lr-gen", args.lr_gen, saved.generator_lr()),
    ] {
        if let Some(lr) = given.filter(|lr| *lr != saved) {
            bail!("{flag} {lr} contradicts the checkpoint, which was trained with {saved}; drop the flag to resume");
        }
    }
    let describe_ema = |ema: Option<f64>| ema.map_or("--ema off".to_string(), |d| format!("--ema {d}"));
    if let Some(EmaFlag(decay)) = args.ema.filter(|EmaFlag(decay)| *decay != saved.ema) {
        bail!(
            "{} contradicts the checkpoint, which was trained with {}; drop the flag to resume",
            describe_ema(decay),
            describe_ema(saved.ema)
        );
    }
    // `--paper` names a whole set of settings: the checkpoint must have been trained with them
    // (or with flags that override them, which are checked above).
    if args.paper {
        let paper = paper_defaults(saved.algo);
        let differs = (args.lr.is_none() && saved.lr != paper.lr)
            || (args.betas.is_none() && saved.betas != paper.betas)
            || (args.n_critic.is_none() && saved.n_critic != paper.n_critic)
            || (args.ema.is_none() && saved.ema != paper.ema)
            || (args.lr_critic.is_none() && saved.lr_critic.is_some())
            || (args.lr_gen.is_none() && saved.lr_generator.is_some());
        if differs {
            bail!(
                "--paper contradicts the checkpoint, which was trained with lr {}, betas {},{}, n-critic {}, {}; \
                 drop the flag to resume",
                saved.lr,
                saved.betas.0,
                saved.betas.1,
                saved.n_critic,
                describe_ema(saved.ema)
            );
        }
    }
    if args.no_critic_warmup && saved.critic_warmup {
        bail!("--no-critic-warmup contradicts the checkpoint, which was trained with the warm-up schedule");
    }
    Ok(())
}

/// The trainer of `--resume`'s checkpoint (its configuration checked against the flags given,
/// `--iters` extending it), or a new one from the flags.
fn resume_or_start(args: &TrainArgs, train_len: usize) -> Result<Trainer> {
    match &args.resume {
        Some(path) => {
            let mut trainer = load_checkpoint(path, train_len)?;
            check_resume_flags(args, &trainer.config)?;
            check_memory(&trainer.config, args)?;
            if let Some(iters) = args.iters {
                if iters < trainer.iteration {
                    bail!(
                        "--iters {iters} is below the checkpoint's iteration {}: there is nothing to train; \
                         give more iterations to extend the run",
                        trainer.iteration
                    );
                }
                trainer.config.iters = iters;
            }
            Ok(trainer)
        }
        None => {
            let config = new_config(args);
            check_memory(&config, args)?;
            Trainer::new(config, train_len)
        }
    }
}

/// Refuses a run whose networks, optimiser state, activations and quality samples would take
/// more than this machine's memory (Linux's `MemTotal`; elsewhere nothing is checked): an
/// allocation that fails aborts the process, so `--dim 100000` or `--batch-size 1e11` must be
/// an error before it. The estimate is generous (within a few times the measured peak: 147 MB
/// for the default run), so only settings out of all proportion are refused.
fn check_memory(config: &TrainConfig, args: &TrainArgs) -> Result<()> {
    let Some(total) = memory_total_bytes() else {
        return Ok(());
    };
    let d = config.dim as f64;
    // Parameters (weights, gradients, two optimiser states, an average) and the values a
    // sample keeps for the backward passes of a step (about 2,000 per unit of width for the
    // DCGAN pair, counted from its layers' outputs, times what a double backward keeps).
    let (parameters, per_sample) = match config.model {
        earthmover_wgan::models::ModelKind::Dcgan => (500.0 * d * d + 8_400.0 * d, 2_000.0 * d),
        earthmover_wgan::models::ModelKind::Mlp => (400_000.0, 2_000.0),
    };
    let quality = if args.eval_every > 0 {
        args.eval_samples as f64 * 784.0
    } else {
        0.0
    };
    let bytes = 4.0 * (5.0 * parameters + 8.0 * config.batch_size as f64 * per_sample + 2.0 * quality);
    if bytes > total as f64 {
        bail!(
            "--dim {} with --batch-size {}{} would need about {:.0} GB of memory, more than this machine's {:.0} GB",
            config.dim,
            config.batch_size,
            if quality > 0.0 {
                format!(" and --eval-samples {}", args.eval_samples)
            } else {
                String::new()
            },
            bytes / 1e9,
            total as f64 / 1e9
        );
    }
    Ok(())
}

/// The machine's memory in bytes (`MemTotal` of `/proc/meminfo`), where Linux says.
pub fn memory_total_bytes() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

/// The output folders (locked by `lock`), and the fixed noise of the sample grids (from the
/// seed, so that a resumed run draws the same digits).
fn set_up_outputs(
    args: &TrainArgs,
    config: &TrainConfig,
    quality_probe: Option<QualityProbe>,
    lock: DirLock,
) -> Result<Outputs> {
    ensure_writable_dir(&args.out)?;
    ensure_writable_dir(&args.out.join(SAMPLES))?;
    Ok(Outputs {
        dir: args.out.clone(),
        fixed_noise: Generator::noise(64, &mut StdRng::seed_from_u64(config.seed ^ 0x5A3F_1E5D_u64)),
        quality_probe,
        _lock: lock,
    })
}

/// The run's precision for its header: f32, or mixed precision with, in f16, the loss scalers'
/// settings and where they stand (a resumed run goes on from its checkpoint's scales).
fn describe_precision(trainer: &Trainer) -> String {
    match (
        trainer.config.precision,
        &trainer.critic_scaler,
        &trainer.generator_scaler,
    ) {
        (Precision::F32, ..) => "f32".to_string(),
        (p, Some(critic), Some(generator)) => {
            let settings = critic.state_dict();
            format!(
                "mixed precision {p} with dynamic loss scaling: scale {} (critic) and {} (generator), x{} after \
                 {} good steps, x{} after an inf or NaN gradient, which skips the step; {} critic and {} \
                 generator steps skipped so far",
                critic.get_scale(),
                generator.get_scale(),
                settings.growth_factor,
                settings.growth_interval,
                settings.backoff_factor,
                critic.skipped_steps(),
                generator.skipped_steps()
            )
        }
        (p, ..) => format!("mixed precision {p}"),
    }
}

/// The device for the run's header: a GPU by name, or the CPU with its threads and SIMD path.
fn describe_device(device: Device) -> Result<String> {
    Ok(match device {
        Device::Cpu => format!(
            "the CPU ({} threads, {} kernels, denormals {})",
            rayon::current_num_threads(),
            earthmover_tensor::cpu_simd_path()?,
            if earthmover_tensor::flush_denormal() {
                "flushed"
            } else {
                "kept"
            }
        ),
        gpu => format!("{gpu} ({})", device_name(gpu)?),
    })
}

/// config.json: every setting of the run, the data and the device.
fn write_settings(
    args: &TrainArgs,
    config: &TrainConfig,
    data: &Mnist,
    source: &str,
    device: Device,
    probe: Option<&QualityProbe>,
) -> Result<()> {
    let settings = serde_json::json!({
        "earthmover_version": env!("CARGO_PKG_VERSION"),
        "training": config,
        "data": source,
        "train_images": data.train.len(),
        "test_images": data.test.len(),
        "device": device.to_string(),
        "cpu_simd_path": earthmover_tensor::cpu_simd_path()?.name(),
        "cpu_flush_denormal": earthmover_tensor::flush_denormal(),
        "out": args.out.display().to_string(),
        "sample_every": args.sample_every,
        "checkpoint_every": args.checkpoint_every,
        "eval_every": args.eval_every,
        "eval_samples": args.eval_samples,
        "quality_measured_by": probe.map(|p| p.ruler().to_string()),
        "resumed_from": args.resume.as_ref().map(|p| p.display().to_string()),
    });
    write_atomic(
        &args.out.join(SETTINGS),
        serde_json::to_string_pretty(&settings).expect("json").as_bytes(),
    )
}

/// Set by Ctrl-C, so that the loop can save a checkpoint and stop between iterations.
fn interrupt_flag() -> Arc<AtomicBool> {
    let interrupted = Arc::new(AtomicBool::new(false));
    let flag = interrupted.clone();
    if let Err(e) = ctrlc::set_handler(move || flag.store(true, Ordering::SeqCst)) {
        eprintln!("warning: Ctrl-C will not save a checkpoint ({e})");
    }
    interrupted
}

/// Read back the rows of an earlier run's metrics file, up to `iteration`.
fn read_metrics(path: &Path, iteration: usize) -> Result<Vec<IterationLog>> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Ok(Vec::new());
    };
    let mut rows = history::parse_csv(&text, &path.display().to_string())?;
    rows.retain(|r| r.iteration <= iteration);
    Ok(rows)
}

/// A run being trained: the trainer, the rows logged so far, and where they go.
struct Run<'a> {
    args: &'a TrainArgs,
    data: &'a Mnist,
    outputs: Outputs,
    trainer: Trainer,
    rows: Vec<IterationLog>,
    bar: ProgressBar,
    /// The iteration this process started at (0, or where the checkpoint resumed).
    start_iteration: usize,
    /// Set when `--max-seconds` has passed: the iteration that saw it was the last.
    out_of_time: bool,
}

impl Run<'_> {
    /// One generator iteration, then what is due at it: quality scores, a sample grid with the
    /// logs, a checkpoint. A diverged step saves the logs and names the last good checkpoint.
    fn iteration(&mut self) -> Result<()> {
        let (args, algo, iters) = (self.args, self.trainer.config.algo, self.trainer.config.iters);
        let mut log = match self.trainer.step(self.data) {
            Ok(log) => log,
            Err(e) => {
                self.bar.finish_and_clear();
                if let Err(write) = self.outputs.save_logs(&self.rows, algo) {
                    bail!("{e}; stopped, and the logs could not be saved: {write}");
                }
                let checkpoint = self.outputs.checkpoint_path();
                let kept = if checkpoint.exists() {
                    format!("the last good checkpoint is {}", checkpoint.display())
                } else {
                    "no checkpoint was saved yet".to_string()
                };
                bail!("{e}; stopped, {kept}");
            }
        };
        let it = log.iteration;
        self.bar.set_position(it as u64);
        self.bar.set_message(progress_message(&log, algo));
        self.out_of_time = args.max_seconds.is_some_and(|limit| self.trainer.seconds() >= limit);
        let last = it == iters || self.out_of_time;
        if let Some(probe) = &self.outputs.quality_probe {
            if it.is_multiple_of(args.eval_every) || last {
                // Noise from the seed and the iteration: a resumed run scores what an unbroken
                // one would, and scoring leaves the training's random stream alone.
                let seed = self.trainer.config.seed ^ (it as u64).wrapping_mul(0xD1B5_4A32_D192_ED03);
                log.quality = Some(probe.measure(self.trainer.sampler(), args.eval_samples, seed));
            }
        }
        self.rows.push(log);
        if it.is_multiple_of(args.sample_every) || last {
            let path = self.outputs.save_samples(&self.trainer)?;
            self.outputs.save_logs(&self.rows, algo)?;
            if args.quiet || self.bar.is_hidden() {
                eprintln!(
                    "{}  -> {}",
                    quiet_line(self.rows.last().expect("a row was pushed")),
                    path.display()
                );
            }
        }
        if it.is_multiple_of(args.checkpoint_every) || last {
            self.outputs.save_checkpoint(&self.trainer)?;
        }
        Ok(())
    }

    /// After Ctrl-C: a checkpoint and the logs, to resume from.
    fn save_interrupted(&self) -> Result<()> {
        self.bar.finish_and_clear();
        self.outputs.save_checkpoint(&self.trainer)?;
        self.outputs.save_logs(&self.rows, self.trainer.config.algo)?;
        eprintln!(
            "interrupted at iteration {}: saved {} (resume with --resume)",
            self.trainer.iteration,
            self.outputs.checkpoint_path().display()
        );
        Ok(())
    }

    /// The end of training: complete outputs even when nothing was left to train (a run resumed
    /// at its end), and a summary.
    fn finish(&self) -> Result<()> {
        self.bar.finish_and_clear();
        if self.trainer.iteration == self.start_iteration {
            self.outputs.save_samples(&self.trainer)?;
            self.outputs.save_logs(&self.rows, self.trainer.config.algo)?;
            self.outputs.save_checkpoint(&self.trainer)?;
        }
        if self.out_of_time {
            eprintln!(
                "stopped at iteration {} of {}: --max-seconds has passed",
                self.trainer.iteration, self.trainer.config.iters
            );
        }
        eprintln!(
            "done: {} iterations in {:.0} s; samples, metrics.csv, plots and checkpoints in {}",
            self.trainer.iteration,
            self.trainer.seconds(),
            self.args.out.display()
        );
        for line in self.summary() {
            eprintln!("  {line}");
        }
        Ok(())
    }

    /// How good the run got and where to look: the Wasserstein estimate at the end, the last
    /// quality measurement beside the real images', and the sample grid that scored best.
    fn summary(&self) -> Vec<String> {
        let mut lines = Vec::new();
        let Some(last) = self.rows.last() else {
            return lines;
        };
        // The estimate is noisy step to step: the median of the last 50 says where it ended.
        let recent: Vec<f64> = self.rows.iter().rev().take(50).map(|r| r.wasserstein).collect();
        let mut estimate = format!(
            "{} at the end: {:.4} (median of the last {} iterations)",
            match self.trainer.config.algo {
                Algo::Gan => "mean D(real) - mean D(fake)",
                _ => "Wasserstein estimate",
            },
            median(&recent),
            recent.len()
        );
        if let Some((it, w)) = self
            .rows
            .iter()
            .rev()
            .find_map(|r| Some((r.iteration, r.test_wasserstein?)))
        {
            estimate.push_str(&format!(", {w:.4} on test images at iteration {it}"));
        }
        lines.push(estimate);
        if let (Some(critic), Some(generator)) = (&self.trainer.critic_scaler, &self.trainer.generator_scaler) {
            lines.push(format!(
                "loss scaling: {} critic and {} generator steps skipped in all; scales at the end {} and {}",
                critic.skipped_steps(),
                generator.skipped_steps(),
                critic.get_scale(),
                generator.get_scale()
            ));
        }
        if let (Some(probe), Some((it, q))) = (
            &self.outputs.quality_probe,
            self.rows
                .iter()
                .rev()
                .find_map(|r| Some((r.iteration, r.quality.as_ref()?))),
        ) {
            lines.push(format!("quality at iteration {it}: {}", quality::one_line(q)));
            lines.push(format!(
                "real images:          {}   (measured by {})",
                quality::one_line(&probe.real),
                probe.ruler()
            ));
        }
        let grid_saved = |it: usize| it.is_multiple_of(self.args.sample_every) || it == last.iteration;
        let best = self
            .rows
            .iter()
            .filter_map(|r| Some((r.iteration, r.quality.as_ref()?.frechet_distance)))
            .filter(|&(it, _)| grid_saved(it))
            .min_by(|a, b| a.1.total_cmp(&b.1));
        if let Some((it, fd)) = best {
            let path = self.outputs.sample_path(it);
            if path.exists() {
                lines.push(format!("best sample grid: {} (FD {fd:.1})", path.display()));
            }
        }
        lines
    }
}

/// The median of `values` (not empty).
fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let mid = sorted.len() / 2;
    if sorted.len() % 2 == 1 {
        sorted[mid]
    } else {
        0.5 * (sorted[mid - 1] + sorted[mid])
    }
}

/// The progress bar's message: the losses of the last iteration, and the loss scales of an
/// f16 run.
fn progress_message(log: &IterationLog, algo: Algo) -> String {
    format!(
        "W {:.4}  critic {:.4}  gen {:.4}{}{}",
        log.wasserstein,
        log.critic_loss,
        log.generator_loss,
        if algo == Algo::WganGp {
            format!("  gp {:.4}", log.penalty)
        } else {
            String::new()
        },
        log.loss_scaling
            .map(|l| format!("  scale {}/{}", l.critic_scale, l.generator_scale))
            .unwrap_or_default()
    )
}

/// The line printed at each sample grid without a progress bar (`--quiet`).
fn quiet_line(row: &IterationLog) -> String {
    let quality = row
        .quality
        .as_ref()
        .map(|q| format!("  {}", quality::one_line(q)))
        .unwrap_or_default();
    format!(
        "iter {:>6}  {:>7.1}s  W {:.4}  critic {:.4}  gen {:.4}{quality}",
        row.iteration, row.seconds, row.wasserstein, row.critic_loss, row.generator_loss
    )
}

fn progress_bar(args: &TrainArgs, config: &TrainConfig, position: usize) -> ProgressBar {
    if args.quiet {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(config.iters as u64);
    // indicatif's own {per_sec} prints four decimals; a rate needs two significant digits.
    let rate = |state: &ProgressState, w: &mut dyn std::fmt::Write| {
        let per_sec = state.per_sec();
        let _ = match per_sec {
            r if r >= 10.0 => write!(w, "{r:.0} it/s"),
            r if r >= 1.0 => write!(w, "{r:.1} it/s"),
            r if r > 0.0 => write!(w, "{:.1} s/it", 1.0 / r),
            _ => write!(w, "- it/s"),
        };
    };
    bar.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} iters  {rate}  eta {eta}  {msg}")
            .expect("a valid template")
            .with_key("rate", rate),
    );
    bar.set_position(position as u64);
    bar
}
