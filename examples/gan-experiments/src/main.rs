//! `gan-experiments`: the experiments of `docs/experiments.md`, each a subcommand;
//! `scripts/experiments.sh` runs them all.

mod compare;
mod frontier;
mod lines;
mod toy;

use clap::{Parser, Subcommand};
use earthmover_wgan::io::{ensure_writable_dir, write_atomic};
use earthmover_wgan::plot::{field_plot, Field, Series};
use earthmover_wgan::train::Algo;
use earthmover_wgan::{Error, Result};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;
use toy::{coverage, Coverage, Toy, ToyConfig, ToyGan};

/// The experiments behind docs/experiments.md.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Compare wgan-mnist runs trained with --eval-every: quality over training, class
    /// histograms, and the rank correlation of each critic's loss with the Frechet distance.
    Compare {
        /// Run folders (each with metrics.csv and config.json).
        #[arg(required = true)]
        runs: Vec<PathBuf>,
        /// Where the figures go.
        #[arg(long, value_name = "DIR", default_value = "docs/images/experiments")]
        out: PathBuf,
    },
    /// Quality against training time over a sweep of wgan-mnist runs (scripts/sweep-defaults.sh):
    /// each run at its best point within the budget and at its end, and the frontier plot.
    Frontier {
        /// Run folders (each with metrics.csv and config.json, trained with --eval-every).
        #[arg(required = true)]
        runs: Vec<PathBuf>,
        /// The training-time budget in seconds.
        #[arg(long, default_value_t = 900.0)]
        budget: f64,
        /// Where frontier.png goes.
        #[arg(long, value_name = "DIR", default_value = "docs/images")]
        out: PathBuf,
    },
    /// The WGAN paper's parallel lines: TV, KL, JS and W against theta, with trained estimates.
    ParallelLines {
        #[arg(long, value_name = "DIR", default_value = "docs/images/experiments")]
        out: PathBuf,
        /// Critic and discriminator steps per theta.
        #[arg(long, default_value_t = 1000)]
        steps: usize,
    },
    /// Train on 2-D toy data and measure mode coverage.
    Toy {
        /// 8gaussians, 25gaussians or swissroll.
        #[arg(long, value_parser = parse_with::<Toy>)]
        data: Toy,
        /// gan, wgan or wgan-gp.
        #[arg(long, value_parser = parse_with::<Algo>)]
        algo: Algo,
        /// Generator iterations.
        #[arg(long, default_value_t = 2000)]
        iters: usize,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Where the scatter plot goes.
        #[arg(long, value_name = "DIR", default_value = "docs/images/experiments")]
        out: PathBuf,
        /// Where the result (JSON) goes.
        #[arg(long, value_name = "DIR", default_value = "runs/experiments")]
        runs: PathBuf,
    },
    /// The table of every toy result found in a runs folder, as markdown.
    ToyTable {
        #[arg(long, value_name = "DIR", default_value = "runs/experiments")]
        runs: PathBuf,
    },
}

fn parse_with<T: std::str::FromStr<Err = String>>(s: &str) -> std::result::Result<T, String> {
    s.parse()
}

/// Samples scored per toy run, as in the mode-coverage literature.
const TOY_SAMPLES: usize = 2500;
/// High-quality samples a mode needs to count as covered: one, as in VEEGAN's and PacGAN's
/// protocol ("the number of mixture components whose mean is nearest to at least one high
/// quality sample").
const TOY_MIN_PER_MODE: usize = 1;

/// A toy run's result, saved as JSON for the table.
#[derive(serde::Serialize, serde::Deserialize)]
struct ToyResult {
    config: ToyConfig,
    seconds: f64,
    coverage: Coverage,
    /// (iteration, modes covered, high-quality share) every tenth of the run.
    trace: Vec<(usize, usize, f64)>,
}

fn run_toy(config: ToyConfig, out: &Path, runs: &Path) -> Result<()> {
    ensure_writable_dir(out)?;
    ensure_writable_dir(runs)?;
    let (toy, algo, iters) = (config.toy, config.algo, config.iters);
    let mut gan = ToyGan::new(config.clone());
    let start = Instant::now();
    let mut trace = Vec::new();
    for it in 1..=iters {
        gan.step()?;
        if it % (iters / 10).max(1) == 0 || it == iters {
            let c = coverage(toy, &gan.samples(TOY_SAMPLES, it as u64), TOY_MIN_PER_MODE);
            eprintln!(
                "{toy} {algo} iter {it:>6} ({:.0} s): {}/{} modes, {:.1}% high quality",
                start.elapsed().as_secs_f64(),
                c.modes_covered,
                c.modes,
                100.0 * c.high_quality
            );
            trace.push((it, c.modes_covered, c.high_quality));
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    let samples = gan.samples(TOY_SAMPLES, u64::MAX);
    let result = ToyResult {
        config,
        seconds,
        coverage: coverage(toy, &samples, TOY_MIN_PER_MODE),
        trace,
    };
    let extent = 2.2;
    let cells = 100;
    let field = Field {
        x_range: (-extent, extent),
        y_range: (-extent, extent),
        values: gan.critic_field(extent, cells),
        rows: cells,
        columns: cells,
        levels: 12,
    };
    let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(7);
    let real: Vec<(f64, f64)> = (0..500).map(|_| toy.sample(&mut rng)).collect();
    let plot = field_plot(
        &format!(
            "{toy}, {algo}: {}/{} modes, {:.0}% high quality",
            result.coverage.modes_covered,
            result.coverage.modes,
            100.0 * result.coverage.high_quality
        ),
        "x",
        "y",
        &field,
        &[
            Series {
                name: "real".into(),
                points: real,
                color: (250, 140, 0),
            },
            Series {
                name: "generated".into(),
                points: samples.into_iter().take(500).collect(),
                color: (30, 60, 200),
            },
        ],
        (560, 560),
    )
    .map_err(Error)?;
    write_atomic(&out.join(format!("toy-{toy}-{algo}.png")), &plot)?;
    let json = serde_json::to_string_pretty(&result).expect("json");
    write_atomic(&runs.join(format!("toy-{toy}-{algo}.json")), json.as_bytes())?;
    eprintln!("{toy} {algo}: done in {seconds:.0} s");
    Ok(())
}

fn toy_table(runs: &Path) -> Result<()> {
    println!("| data | algorithm | iterations | modes covered | high-quality samples | modes covered every tenth of the run | seconds |");
    println!("| --- | --- | ---: | ---: | ---: | --- | ---: |");
    let mut found = 0;
    for toy in [Toy::EightGaussians, Toy::TwentyFiveGaussians, Toy::SwissRoll] {
        for algo in [Algo::Gan, Algo::Wgan, Algo::WganGp] {
            let path = runs.join(format!("toy-{toy}-{algo}.json"));
            let Ok(text) = std::fs::read_to_string(&path) else {
                continue;
            };
            let r: ToyResult = serde_json::from_str(&text)
                .map_err(|e| Error(format!("{}: not a toy result ({e})", path.display())))?;
            let trace: Vec<String> = r.trace.iter().map(|t| t.1.to_string()).collect();
            println!(
                "| {toy} | {algo} | {} | {} / {} | {:.1}% | {} | {:.0} |",
                r.config.iters,
                r.coverage.modes_covered,
                r.coverage.modes,
                100.0 * r.coverage.high_quality,
                trace.join(" "),
                r.seconds
            );
            found += 1;
        }
    }
    if found == 0 {
        return Err(Error(format!("no toy results in {}", runs.display())));
    }
    Ok(())
}

fn main() -> ExitCode {
    // A training step frees and allocates the same large tensors every step: keep freed memory
    // in the process for reuse rather than handing it back to the system (a process-wide malloc
    // setting, so the program makes it, not the library).
    earthmover_tensor::retain_freed_memory();
    // Denormals flushed to zero for speed, as in wgan-mnist (EARTHMOVER_FLUSH_DENORMAL=0 keeps
    // them).
    if let Err(e) = earthmover_tensor::configure_flush_denormal(true) {
        eprintln!("error: {e}");
        return ExitCode::FAILURE;
    }
    let result = match Cli::parse().command {
        Command::Compare { runs, out } => compare::compare(&runs, &out),
        Command::Frontier { runs, budget, out } => frontier::report(&runs, budget, &out),
        Command::ParallelLines { out, steps } => lines::parallel_lines(&out, steps),
        Command::Toy {
            data,
            algo,
            iters,
            seed,
            out,
            runs,
        } => run_toy(ToyConfig::new(data, algo, iters, seed), &out, &runs),
        Command::ToyTable { runs } => toy_table(&runs),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
