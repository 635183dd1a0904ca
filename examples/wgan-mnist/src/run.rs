//! The `train` and `sample` commands: data, output folder, the training loop with its progress
//! bar, logs, pictures and checkpoints.

use crate::download;
use crate::TrainArgs;
use earthmover_tensor::{cuda_device_count, device_name, Device, Tensor};
use earthmover_wgan::checkpoint::{load_checkpoint, load_generator, save_checkpoint, save_generator};
use earthmover_wgan::classifier::{Classifier, Quality, Reference, INPUT_RANGE};
use earthmover_wgan::data::{Mnist, Split};
use earthmover_wgan::history;
use earthmover_wgan::io::{ensure_writable_dir, write_atomic};
use earthmover_wgan::models::Generator;
use earthmover_wgan::nn::Module;
use earthmover_wgan::plot::{line_plot, median_filter, panels, sample_grid, Panel, Series, CLASS_COLORS};
use earthmover_wgan::train::{Algo, IterationLog, TrainConfig, Trainer};
use earthmover_wgan::{bail, Error, Result};
use indicatif::{ProgressBar, ProgressStyle};
use rand::rngs::StdRng;
use rand::SeedableRng;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Iterations when none are given: what a 2-core CPU trains in under 30 minutes.
pub const DEFAULT_ITERS: usize = 2000;
/// DCGAN width when none is given (the paper's is 64).
pub const DEFAULT_DIM: usize = 32;

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

/// The configuration of a new run: the algorithm's defaults, overridden by the flags given.
fn new_config(args: &TrainArgs) -> TrainConfig {
    let mut c = TrainConfig::new(args.algo.unwrap_or(Algo::WganGp));
    c.dim = DEFAULT_DIM;
    c.iters = DEFAULT_ITERS;
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
        test_every
    );
    if args.no_critic_warmup {
        c.critic_warmup = false;
    }
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
        test_every
    );
    if args.no_critic_warmup && saved.critic_warmup {
        bail!("--no-critic-warmup contradicts the checkpoint, which was trained with the warm-up schedule");
    }
    Ok(())
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

fn wasserstein_plot(rows: &[IterationLog], algo: Algo) -> Result<Vec<u8>> {
    let train: Vec<(f64, f64)> = rows.iter().map(|r| (r.iteration as f64, r.wasserstein)).collect();
    let window = (rows.len() / 50).max(5) | 1;
    let smooth = median_filter(&train.iter().map(|p| p.1).collect::<Vec<_>>(), window);
    let test: Vec<(f64, f64)> = rows
        .iter()
        .filter_map(|r| r.test_wasserstein.map(|w| (r.iteration as f64, w)))
        .collect();
    let series = vec![
        Series {
            name: "train (raw)".into(),
            points: train.clone(),
            color: (190, 200, 225),
        },
        Series {
            name: format!("train (median of {window})"),
            points: train.iter().zip(smooth).map(|(p, s)| (p.0, s)).collect(),
            color: (30, 80, 200),
        },
        Series {
            name: "test".into(),
            points: test,
            color: (220, 60, 30),
        },
    ];
    let title = match algo {
        Algo::Gan => "mean D(real) - mean D(fake) (GAN logits)".to_string(),
        _ => format!("Wasserstein estimate ({algo})"),
    };
    line_plot(
        &title,
        "generator iteration",
        "E[C(real)] - E[C(fake)]",
        &series,
        (900, 500),
    )
    .map_err(Error)
}

/// The digit classifier with the test split's feature statistics, and the real digits' own
/// scores to show beside the samples'.
struct QualityProbe {
    classifier: Classifier,
    reference: Reference,
    /// `classifier_score` and coverage of the test split; `frechet_distance` of the train split
    /// to the test split.
    real: Quality,
}

impl QualityProbe {
    fn new(data: &Mnist) -> Result<QualityProbe> {
        let classifier = Classifier::new(&mut StdRng::seed_from_u64(0));
        earthmover_wgan::checkpoint::load_module_bytes(
            &classifier,
            crate::embedded::CLASSIFIER,
            "built-in classifier",
        )?;
        let all = |split: &Split| split.images(&(0..split.len()).collect::<Vec<_>>(), INPUT_RANGE);
        let test = all(&data.test);
        if data.test.len() < 2 {
            bail!(
                "scoring samples needs at least 2 test images, the data has {}",
                data.test.len()
            );
        }
        let reference = classifier.reference(&test);
        let mut real = classifier.quality(&test, &reference);
        real.frechet_distance = classifier.quality(&all(&data.train), &reference).frechet_distance;
        Ok(QualityProbe {
            classifier,
            reference,
            real,
        })
    }

    /// Score `n` fresh samples of `generator`, drawn with noise from `seed`.
    fn measure(&self, generator: &Generator, n: usize, seed: u64) -> Quality {
        let images = generate_unit_range(generator, n, &mut StdRng::seed_from_u64(seed));
        self.classifier.quality(&images, &self.reference)
    }
}

/// Frechet distance, classifier score, confident share and the class shares over training,
/// each beside the real digits' value.
fn quality_plot(rows: &[IterationLog], real: &Quality) -> Result<Vec<u8>> {
    let scored: Vec<(f64, &Quality)> = rows
        .iter()
        .filter_map(|r| r.quality.as_ref().map(|q| (r.iteration as f64, q)))
        .collect();
    let first = scored.first().map_or(0.0, |p| p.0);
    let last = scored.last().map_or(1.0, |p| p.0);
    let line = |name: &str, value: fn(&Quality) -> f64, color| Series {
        name: name.to_string(),
        points: scored.iter().map(|(x, q)| (*x, value(q))).collect(),
        color,
    };
    let real_line = |name: &str, value: f64| Series {
        name: name.to_string(),
        points: vec![(first, value), (last, value)],
        color: (150, 150, 150),
    };
    let panel = |title: &str, y: &str, series: Vec<Series>| Panel {
        title: title.to_string(),
        x_label: "generator iteration".to_string(),
        y_label: y.to_string(),
        series,
    };
    let classes = (0..10)
        .map(|c| Series {
            name: c.to_string(),
            points: scored
                .iter()
                .map(|(x, q)| {
                    let total: usize = q.coverage.histogram.iter().sum();
                    (*x, q.coverage.histogram[c] as f64 / total.max(1) as f64)
                })
                .collect(),
            color: CLASS_COLORS[c],
        })
        .chain([real_line("uniform", 0.1)])
        .collect();
    let blue = (30, 80, 200);
    panels(
        &[
            panel(
                "Frechet distance to the test digits",
                "FD (lower is better)",
                vec![
                    line("samples", |q| q.frechet_distance, blue),
                    real_line("train digits", real.frechet_distance),
                ],
            ),
            panel(
                "classifier score",
                "exp E KL(p(y|x) || p(y))",
                vec![
                    line("samples", |q| q.classifier_score, blue),
                    real_line("test digits", real.classifier_score),
                ],
            ),
            panel(
                "confidently classified (p >= 0.9)",
                "share of samples",
                vec![
                    line("samples", |q| q.coverage.confident_share, blue),
                    real_line("test digits", real.coverage.confident_share),
                ],
            ),
            panel("predicted class of the samples", "share of samples", classes),
        ],
        2,
        (1200, 800),
    )
    .map_err(Error)
}

/// Everything a run writes, in one place.
struct Outputs {
    dir: PathBuf,
    fixed_noise: Tensor,
    /// The classifier that scores samples, when `--eval-every` is on.
    quality_probe: Option<QualityProbe>,
}

impl Outputs {
    fn checkpoint_path(&self) -> PathBuf {
        self.dir.join("checkpoint.safetensors")
    }

    fn save_samples(&self, trainer: &Trainer) -> Result<PathBuf> {
        let images = sample_eval(&trainer.generator, &self.fixed_noise);
        let path = self
            .dir
            .join("samples")
            .join(format!("iter_{:06}.png", trainer.iteration));
        write_atomic(&path, &sample_grid(&images, trainer.generator.output_range, 8, 2))?;
        Ok(path)
    }

    fn save_logs(&self, rows: &[IterationLog], algo: Algo) -> Result<()> {
        write_atomic(&self.dir.join("metrics.csv"), history::to_csv(rows).as_bytes())?;
        if !rows.is_empty() {
            write_atomic(&self.dir.join("wasserstein.png"), &wasserstein_plot(rows, algo)?)?;
        }
        if let Some(probe) = &self.quality_probe {
            if rows.iter().any(|r| r.quality.is_some()) {
                write_atomic(&self.dir.join("quality.png"), &quality_plot(rows, &probe.real)?)?;
            }
        }
        Ok(())
    }

    fn save_checkpoint(&self, trainer: &Trainer) -> Result<()> {
        save_checkpoint(trainer, &self.checkpoint_path())?;
        save_generator(trainer, &self.dir.join("generator.safetensors"))
    }
}

/// Generator output in evaluation mode (batch-norm uses its running statistics and does not
/// update them), so that drawing samples never changes the training state; on the CPU,
/// wherever the generator is.
fn sample_eval(generator: &Generator, noise: &Tensor) -> Tensor {
    let device = generator.parameters().first().map_or(Device::Cpu, |p| p.device());
    generator.set_training(false);
    let images =
        earthmover_tensor::no_grad(|| generator.forward(&noise.to_device(device).expect("the generator's device")));
    generator.set_training(true);
    images.to_device(Device::Cpu).expect("the CPU is always available")
}

pub fn train(args: TrainArgs) -> Result<()> {
    let device = resolve_device(&args.device)?;
    if args.sample_every == 0 || args.checkpoint_every == 0 {
        bail!("--sample-every and --checkpoint-every must be at least 1");
    }
    if args.eval_every > 0 && args.eval_samples < 2 {
        bail!("--eval-samples must be at least 2 (the Frechet distance needs a covariance)");
    }
    let (data, source) = load_data(&args)?;
    // Before the trainer starts its clock: the set-up is not training time.
    let quality_probe = if args.eval_every > 0 {
        Some(QualityProbe::new(&data)?)
    } else {
        None
    };
    let mut trainer = match &args.resume {
        Some(path) => {
            let mut t = load_checkpoint(path, data.train.len())?;
            check_resume_flags(&args, &t.config)?;
            if let Some(iters) = args.iters {
                t.config.iters = iters;
            }
            t
        }
        None => Trainer::new(new_config(&args), data.train.len())?,
    };
    ensure_writable_dir(&args.out)?;
    ensure_writable_dir(&args.out.join("samples"))?;
    trainer.to_device(device)?;
    let config = trainer.config.clone();
    let outputs = Outputs {
        dir: args.out.clone(),
        fixed_noise: Generator::noise(64, &mut StdRng::seed_from_u64(config.seed ^ 0x5A3F_1E5D_u64)),
        quality_probe,
    };
    let settings = serde_json::json!({
        "earthmover_version": env!("CARGO_PKG_VERSION"),
        "training": config,
        "data": source,
        "train_images": data.train.len(),
        "test_images": data.test.len(),
        "device": device.to_string(),
        "out": args.out.display().to_string(),
        "sample_every": args.sample_every,
        "checkpoint_every": args.checkpoint_every,
        "eval_every": args.eval_every,
        "eval_samples": args.eval_samples,
        "resumed_from": args.resume.as_ref().map(|p| p.display().to_string()),
    });
    write_atomic(
        &args.out.join("config.json"),
        serde_json::to_string_pretty(&settings).expect("json").as_bytes(),
    )?;
    let mut rows = match &args.resume {
        Some(_) => read_metrics(&args.out.join("metrics.csv"), trainer.iteration)?,
        None => Vec::new(),
    };

    let interrupted = Arc::new(AtomicBool::new(false));
    {
        let flag = interrupted.clone();
        if let Err(e) = ctrlc::set_handler(move || flag.store(true, Ordering::SeqCst)) {
            eprintln!("warning: Ctrl-C will not save a checkpoint ({e})");
        }
    }
    let bar = progress_bar(&args, &config, trainer.iteration);
    eprintln!(
        "training {} with the {} networks (dim {}), batch {}, {} iterations, data: {source}",
        config.algo, config.model, config.dim, config.batch_size, config.iters
    );
    let start_iteration = trainer.iteration;
    while trainer.iteration < config.iters {
        if interrupted.load(Ordering::SeqCst) {
            bar.finish_and_clear();
            outputs.save_checkpoint(&trainer)?;
            outputs.save_logs(&rows, config.algo)?;
            eprintln!(
                "interrupted at iteration {}: saved {} (resume with --resume)",
                trainer.iteration,
                outputs.checkpoint_path().display()
            );
            return Ok(());
        }
        let log = match trainer.step(&data) {
            Ok(log) => log,
            Err(e) => {
                bar.finish_and_clear();
                outputs.save_logs(&rows, config.algo)?;
                let kept = if outputs.checkpoint_path().exists() {
                    format!("the last good checkpoint is {}", outputs.checkpoint_path().display())
                } else {
                    "no checkpoint was saved yet".to_string()
                };
                bail!("{e}; stopped, {kept}");
            }
        };
        let it = log.iteration;
        bar.set_position(it as u64);
        bar.set_message(format!(
            "W {:.4}  critic {:.4}  gen {:.4}{}",
            log.wasserstein,
            log.critic_loss,
            log.generator_loss,
            if config.algo == Algo::WganGp {
                format!("  gp {:.4}", log.penalty)
            } else {
                String::new()
            }
        ));
        let last = it == config.iters;
        let mut log = log;
        if let Some(probe) = &outputs.quality_probe {
            if it.is_multiple_of(args.eval_every) || last {
                // Noise from the seed and the iteration: a resumed run scores what an unbroken
                // one would, and scoring leaves the training's random stream alone.
                let seed = config.seed ^ (it as u64).wrapping_mul(0xD1B5_4A32_D192_ED03);
                log.quality = Some(probe.measure(&trainer.generator, args.eval_samples, seed));
            }
        }
        rows.push(log);
        if it.is_multiple_of(args.sample_every) || last {
            let path = outputs.save_samples(&trainer)?;
            outputs.save_logs(&rows, config.algo)?;
            if args.quiet || bar.is_hidden() {
                let r = rows.last().expect("a row was pushed");
                let quality = r
                    .quality
                    .as_ref()
                    .map(|q| {
                        format!(
                            "  FD {:.1}  score {:.2}  classes {}",
                            q.frechet_distance, q.classifier_score, q.coverage.covered
                        )
                    })
                    .unwrap_or_default();
                eprintln!(
                    "iter {it:>6}  {:>7.1}s  W {:.4}  critic {:.4}  gen {:.4}{quality}  -> {}",
                    r.seconds,
                    r.wasserstein,
                    r.critic_loss,
                    r.generator_loss,
                    path.display()
                );
            }
        }
        if it.is_multiple_of(args.checkpoint_every) || last {
            outputs.save_checkpoint(&trainer)?;
        }
    }
    bar.finish_and_clear();
    if trainer.iteration == start_iteration {
        // Nothing to train (resumed at the end): still leave complete outputs.
        outputs.save_samples(&trainer)?;
        outputs.save_logs(&rows, config.algo)?;
        outputs.save_checkpoint(&trainer)?;
    }
    eprintln!(
        "done: {} iterations in {:.0} s; samples, metrics.csv, plots and checkpoints in {}",
        trainer.iteration,
        trainer.seconds(),
        args.out.display()
    );
    Ok(())
}

fn progress_bar(args: &TrainArgs, config: &TrainConfig, position: usize) -> ProgressBar {
    if args.quiet {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(config.iters as u64);
    bar.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} iters  {per_sec}  eta {eta}  {msg}")
            .expect("a valid template"),
    );
    bar.set_position(position as u64);
    bar
}

pub fn sample(checkpoint: &Path, n: usize, out: &Path, seed: u64) -> Result<()> {
    if n == 0 {
        bail!("--n must be at least 1");
    }
    let (generator, _) = load_generator(checkpoint)?;
    let noise = Generator::noise(n, &mut StdRng::seed_from_u64(seed));
    let images = sample_eval(&generator, &noise);
    let columns = (n as f64).sqrt().ceil() as usize;
    write_atomic(out, &sample_grid(&images, generator.output_range, columns, 2))?;
    eprintln!("wrote {n} samples to {}", out.display());
    Ok(())
}

pub fn train_classifier(epochs: usize, out: &Path, data: Option<&Path>, seed: u64) -> Result<()> {
    use earthmover_wgan::classifier::Classifier;
    if epochs == 0 {
        bail!("--epochs must be at least 1");
    }
    let data = match data {
        Some(dir) => Mnist::load_dir(dir)?,
        None => crate::embedded::load()?,
    };
    if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
        ensure_writable_dir(parent)?;
    }
    let mut rng = StdRng::seed_from_u64(seed);
    let classifier = Classifier::new(&mut rng);
    let start = std::time::Instant::now();
    classifier.fit(&data.train, epochs, &mut rng, |epoch, loss| {
        eprintln!(
            "epoch {epoch}: mean cross-entropy {loss:.4} ({:.0} s)",
            start.elapsed().as_secs_f64()
        );
    });
    let accuracy = classifier.accuracy(&data.test);
    let command = format!("wgan-mnist train-classifier --epochs {epochs} --seed {seed}");
    let metadata = std::collections::HashMap::from([
        ("format".to_string(), "earthmover-mnist-classifier-1".to_string()),
        ("command".to_string(), command),
        ("train_images".to_string(), data.train.len().to_string()),
        ("test_accuracy".to_string(), format!("{accuracy:.4}")),
    ]);
    earthmover_wgan::checkpoint::save_module(&classifier, metadata, out)?;
    eprintln!(
        "test accuracy {:.2}% on {} images; wrote {} in {:.0} s",
        100.0 * accuracy,
        data.test.len(),
        out.display(),
        start.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Sample `n` images from `generator` in batches, in evaluation mode, with pixels mapped to
/// [0, 1] (the classifier's range).
fn generate_unit_range(generator: &Generator, n: usize, rng: &mut StdRng) -> Tensor {
    let (lo, hi) = generator.output_range;
    let batches: Vec<Tensor> = (0..n)
        .step_by(500)
        .map(|start| {
            let noise = Generator::noise((n - start).min(500), rng);
            sample_eval(generator, &noise)
                .sub_scalar(lo)
                .mul_scalar(1.0 / (hi - lo))
        })
        .collect();
    let refs: Vec<&Tensor> = batches.iter().collect();
    Tensor::concat(&refs, 0)
}

pub fn eval(checkpoint: &Path, n: usize, seed: u64) -> Result<()> {
    if n < 2 {
        bail!("--n must be at least 2");
    }
    let (generator, config) = load_generator(checkpoint)?;
    let data = crate::embedded::load()?;
    let probe = QualityProbe::new(&data)?;
    let generated = probe.measure(&generator, n, seed);
    let real = &probe.real;
    println!(
        "{} ({}, dim {}), {n} samples, scored against the {} test digits",
        checkpoint.display(),
        config.algo,
        config.dim,
        data.test.len()
    );
    println!("{:<32} {:>12} {:>12}", "", "generated", "real");
    println!(
        "{:<32} {:>12.3} {:>12.3}",
        "classifier score (1-10)", generated.classifier_score, real.classifier_score
    );
    println!(
        "{:<32} {:>12.3} {:>12.3}",
        "Frechet distance to test", generated.frechet_distance, real.frechet_distance
    );
    println!(
        "{:<32} {:>12} {:>12}",
        "classes covered", generated.coverage.covered, real.coverage.covered
    );
    println!(
        "{:<32} {:>12.4} {:>12.4}",
        "KL(class histogram || uniform)", generated.coverage.kl_from_uniform, real.coverage.kl_from_uniform
    );
    println!(
        "{:<32} {:>12.3} {:>12.3}",
        "confidently classified (p>=0.9)", generated.coverage.confident_share, real.coverage.confident_share
    );
    println!("class histogram of the samples: {:?}", generated.coverage.histogram);
    println!("(real: the test split itself; its Frechet distance is the train split's to the test split)");
    Ok(())
}
