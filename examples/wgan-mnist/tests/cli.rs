//! The `wgan-mnist` binary end to end: every algorithm and model trains and leaves complete
//! outputs; a resumed run equals an unbroken one bit for bit; every bad input is a clear
//! error with a non-zero exit, never a panic.

mod common;

use common::{bin, stderr, TINY};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn scratch(name: &str) -> PathBuf {
    common::scratch("cli", name)
}

fn run(args: &[&str]) -> Output {
    bin().args(args).output().expect("the binary runs")
}

/// Assert a clean failure: non-zero exit, an `error:` line containing `needle`, no panic.
fn assert_fails_with(out: &Output, needle: &str) {
    let err = stderr(out);
    assert!(!out.status.success(), "expected failure, got success; stderr:\n{err}");
    assert!(!err.contains("panicked"), "panicked:\n{err}");
    assert!(
        err.contains("error:") && err.contains(needle),
        "expected `{needle}` in:\n{err}"
    );
}

fn train(out: &Path, extra: &[&str]) -> Output {
    let mut args = vec!["train", "--out", out.to_str().unwrap()];
    args.extend_from_slice(TINY);
    if extra.contains(&"--eval-every") {
        let at = args.iter().position(|a| *a == "--eval-every").expect("TINY sets it");
        args.drain(at..at + 2);
    }
    args.extend_from_slice(extra);
    run(&args)
}

fn metrics(out: &Path) -> Vec<Vec<String>> {
    let text = std::fs::read_to_string(out.join("metrics.csv")).expect("metrics.csv written");
    text.lines()
        .skip(1)
        .map(|l| l.split(',').map(str::to_string).collect())
        .collect()
}

fn decode_png(path: &Path) -> (u32, u32) {
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(path).expect("png exists")));
    let reader = decoder
        .read_info()
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    (reader.info().width, reader.info().height)
}

#[test]
fn every_algorithm_and_model_trains_and_writes_its_outputs() {
    for algo in ["wgan", "wgan-gp", "gan"] {
        for model in ["dcgan", "mlp"] {
            let out = scratch(&format!("{algo}-{model}"));
            let result = train(
                &out,
                &[
                    "--algo",
                    algo,
                    "--model",
                    model,
                    "--iters",
                    "4",
                    "--sample-every",
                    "2",
                    "--no-critic-warmup",
                ],
            );
            assert!(result.status.success(), "{algo} {model}: {}", stderr(&result));
            let rows = metrics(&out);
            assert_eq!(rows.len(), 4, "{algo} {model}: one row per iteration");
            for row in &rows {
                for value in &row[2..7] {
                    let v: f64 = value.parse().unwrap();
                    assert!(v.is_finite(), "{algo} {model}: {row:?}");
                }
            }
            assert!(
                !rows[1][7].is_empty() && rows[0][7].is_empty(),
                "test estimate every 2 iterations"
            );
            assert_eq!(decode_png(&out.join("samples/iter_000002.png")), (466, 466));
            assert_eq!(decode_png(&out.join("samples/iter_000004.png")), (466, 466));
            assert!(decode_png(&out.join("wasserstein.png")).0 > 0);
            let config = std::fs::read_to_string(out.join("config.json")).unwrap();
            assert!(config.contains(&format!("\"algo\": \"{algo}\"")), "{config}");
            // The program flushes denormals unless told not to (x86-64 and aarch64 can).
            if cfg!(any(target_arch = "x86_64", target_arch = "aarch64")) {
                assert!(config.contains("\"cpu_flush_denormal\": true"), "{config}");
            }
            // The checkpoint loads back to the weights of the generator file, exactly.
            let sampled = out.join("from-checkpoint.png");
            let s = run(&[
                "sample",
                "--checkpoint",
                out.join("checkpoint.safetensors").to_str().unwrap(),
                "--n",
                "9",
                "--out",
                sampled.to_str().unwrap(),
            ]);
            assert!(s.status.success(), "{}", stderr(&s));
            let sampled2 = out.join("from-generator.png");
            let s = run(&[
                "sample",
                "--checkpoint",
                out.join("generator.safetensors").to_str().unwrap(),
                "--n",
                "9",
                "--out",
                sampled2.to_str().unwrap(),
            ]);
            assert!(s.status.success(), "{}", stderr(&s));
            assert_eq!(std::fs::read(&sampled).unwrap(), std::fs::read(&sampled2).unwrap());
            // Exported in bf16: about half the generator file, and `sample` draws from it.
            let exported = out.join("generator-bf16.safetensors");
            let e = run(&[
                "export",
                "--checkpoint",
                out.join("checkpoint.safetensors").to_str().unwrap(),
                "--dtype",
                "bf16",
                "--out",
                exported.to_str().unwrap(),
            ]);
            assert!(e.status.success(), "{}", stderr(&e));
            let (half, full) = (
                std::fs::metadata(&exported).unwrap().len(),
                std::fs::metadata(out.join("generator.safetensors")).unwrap().len(),
            );
            assert!(
                half * 10 < full * 6,
                "{algo} {model}: {half} bytes in bf16, {full} in f32"
            );
            let s = run(&[
                "sample",
                "--checkpoint",
                exported.to_str().unwrap(),
                "--n",
                "9",
                "--out",
                out.join("from-bf16.png").to_str().unwrap(),
            ]);
            assert!(s.status.success(), "{}", stderr(&s));
        }
    }
}

#[test]
fn a_resumed_run_matches_an_unbroken_run_bit_for_bit() {
    // The last keeps an average of the generator's weights (whose batch-norm buffers it copies).
    for (algo, ema) in [("wgan-gp", None), ("wgan", None), ("wgan-gp", Some("0.9"))] {
        let name = format!("{algo}{}", ema.map_or("", |_| "-ema"));
        let whole = scratch(&format!("whole-{name}"));
        let parts = scratch(&format!("parts-{name}"));
        let mut common = vec![
            "--algo",
            algo,
            "--model",
            "mlp",
            "--critic-norm",
            "layer",
            "--no-critic-warmup",
        ];
        common.extend(["--ema", ema.unwrap_or("off")]);
        let mut args = common.to_vec();
        args.extend(["--iters", "6"]);
        assert!(train(&whole, &args).status.success());
        let mut args = common.to_vec();
        args.extend(["--iters", "3"]);
        assert!(train(&parts, &args).status.success());
        let checkpoint = parts.join("checkpoint.safetensors");
        let resumed = train(&parts, &["--resume", checkpoint.to_str().unwrap(), "--iters", "6"]);
        assert!(resumed.status.success(), "{}", stderr(&resumed));
        let (a, b) = (metrics(&whole), metrics(&parts));
        assert_eq!(a.len(), 6);
        assert_eq!(b.len(), 6);
        for (ra, rb) in a.iter().zip(&b) {
            // Every column but the wall-clock seconds.
            assert_eq!((&ra[0], &ra[2..]), (&rb[0], &rb[2..]), "{name}: rows differ");
        }
        let weights = |dir: &Path| {
            let bytes = std::fs::read(dir.join("checkpoint.safetensors")).unwrap();
            let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
            let mut tensors: Vec<(String, Vec<u8>)> = file
                .tensors()
                .into_iter()
                .map(|(name, view)| (name, view.data().to_vec()))
                .collect();
            tensors.sort();
            tensors
        };
        assert_eq!(
            weights(&whole),
            weights(&parts),
            "{name}: final networks or optimiser states differ"
        );
        let averaged = weights(&whole).iter().any(|(n, _)| n.starts_with("generator_ema."));
        assert_eq!(averaged, ema.is_some(), "{name}: the checkpoint keeps the average");
    }
    // A run resumed with another decay is refused.
    let parts = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("cli-parts-wgan-gp-ema");
    let checkpoint = parts.join("checkpoint.safetensors");
    assert_fails_with(
        &train(&parts, &["--resume", checkpoint.to_str().unwrap(), "--ema", "0.5"]),
        "--ema 0.5 contradicts the checkpoint, which was trained with --ema 0.9",
    );
}

#[test]
fn max_seconds_ends_the_run_early_with_complete_outputs() {
    let out = scratch("max-seconds");
    let result = train(&out, &["--iters", "50", "--max-seconds", "0.001"]);
    assert!(result.status.success(), "{}", stderr(&result));
    assert!(
        stderr(&result).contains("stopped at iteration 1 of 50"),
        "{}",
        stderr(&result)
    );
    assert_eq!(metrics(&out).len(), 1);
    for file in [
        "checkpoint.safetensors",
        "generator.safetensors",
        "samples/iter_000001.png",
    ] {
        assert!(out.join(file).exists(), "{file}");
    }
    assert_fails_with(
        &train(&out, &["--max-seconds", "0"]),
        "--max-seconds must be a positive",
    );
}

#[test]
fn bad_settings_are_clear_errors() {
    let out = scratch("bad-settings");
    let o = out.to_str().unwrap();
    assert_fails_with(&run(&["--out", o, "--batch-size", "0"]), "batch size must be positive");
    assert_fails_with(&run(&["--out", o, "--lr", "0"]), "learning rate must be positive");
    assert_fails_with(&run(&["--out", o, "--lr=-1e-4"]), "learning rate must be positive");
    // A negative number after a space is the flag's value, not an unknown flag.
    assert_fails_with(&run(&["--out", o, "--lr", "-1"]), "learning rate must be positive");
    assert_fails_with(
        &run(&["--out", o, "--max-seconds", "-5"]),
        "--max-seconds must be a positive",
    );
    // Sizes out of all proportion to the machine's memory are an error, not an abort at an
    // allocation (where Linux says how much memory there is).
    if Path::new("/proc/meminfo").exists() {
        for huge in [
            ["--dim", "100000"],
            ["--batch-size", "100000000000"],
            ["--eval-samples", "100000000000"],
        ] {
            assert_fails_with(
                &run(&["--out", o, huge[0], huge[1], "--eval-every", "1"]),
                "GB of memory, more than this machine's",
            );
        }
    }
    // The settings are checked before the output folder is made: nothing is left behind.
    let never = out.join("never-made");
    assert_fails_with(
        &run(&["--out", never.to_str().unwrap(), "--dim", "0"]),
        "must be positive",
    );
    assert!(!never.exists(), "a refused run left {} behind", never.display());
    assert_fails_with(
        &run(&["--out", o, "--algo", "wgan", "--clip=-0.01"]),
        "clip value must be non-negative",
    );
    assert_fails_with(&run(&["--out", o, "--lambda=-1"]), "lambda must be non-negative");
    assert_fails_with(
        &run(&["--out", o, "--ema", "1"]),
        "EMA decay must lie strictly between 0 and 1",
    );
    assert_fails_with(
        &run(&["--out", o, "--lr-critic", "0"]),
        "critic learning rate must be positive",
    );
    assert_fails_with(
        &run(&["--out", o, "--lr-gen=-1"]),
        "generator learning rate must be positive",
    );
    assert_fails_with(
        &run(&["--out", o, "--critic-norm", "batch"]),
        "batch-norm in the critic cannot be used with WGAN-GP",
    );
    // No machine has a GPU 99: the error names the device and why it cannot be used.
    assert_fails_with(&run(&["--out", o, "--device", "cuda:99"]), "cuda:99 is not available");
    assert_fails_with(&run(&["--out", o, "--device", "gpu"]), "unknown device `gpu`");
    // A SIMD path that does not exist is refused before any work, with the names there are.
    let simd = bin()
        .args(["--out", o])
        .env("EARTHMOVER_SIMD", "sse9")
        .output()
        .unwrap();
    assert_fails_with(&simd, "EARTHMOVER_SIMD: unknown SIMD path `sse9`");
    let denormals = bin()
        .args(["--out", o])
        .env("EARTHMOVER_FLUSH_DENORMAL", "sometimes")
        .output()
        .unwrap();
    assert_fails_with(
        &denormals,
        "EARTHMOVER_FLUSH_DENORMAL=sometimes: expected 1, on, true, 0",
    );
    // A flag clap cannot parse is its own clean error.
    let bad = run(&["--out", o, "--algo", "vae"]);
    assert!(
        !bad.status.success() && stderr(&bad).contains("unknown algorithm `vae`"),
        "{}",
        stderr(&bad)
    );
    let bad = run(&["--out", o, "--betas", "0.5"]);
    assert!(
        !bad.status.success() && stderr(&bad).contains("two numbers"),
        "{}",
        stderr(&bad)
    );
}

fn write_idx(dir: &Path, name: &str, magic: u32, dims: &[u32], data: &[u8]) {
    let mut bytes = magic.to_be_bytes().to_vec();
    for d in dims {
        bytes.extend(d.to_be_bytes());
    }
    bytes.extend(data);
    std::fs::write(dir.join(name), bytes).unwrap();
}

/// A valid raw (uncompressed) MNIST-format folder of `n` blank train and test images.
fn tiny_dataset(dir: &Path, n: u32) {
    let pixels = vec![0u8; (n * 28 * 28) as usize];
    write_idx(dir, "train-images-idx3-ubyte", 0x0803, &[n, 28, 28], &pixels);
    write_idx(dir, "train-labels-idx1-ubyte", 0x0801, &[n], &vec![1; n as usize]);
    write_idx(dir, "t10k-images-idx3-ubyte", 0x0803, &[n, 28, 28], &pixels);
    write_idx(dir, "t10k-labels-idx1-ubyte", 0x0801, &[n], &vec![1; n as usize]);
}

#[test]
fn bad_data_is_a_clear_error() {
    let out = scratch("bad-data-out");
    let o = out.to_str().unwrap();
    let missing = out.join("no-such-folder");
    assert_fails_with(
        &run(&["--out", o, "--data", missing.to_str().unwrap()]),
        "train-images-idx3-ubyte.gz",
    );
    // A file where the folder should be is named as such, not as missing.
    let file = out.join("a-file");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(&file, b"not a folder").unwrap();
    assert_fails_with(&run(&["--out", o, "--data", file.to_str().unwrap()]), "is a file");

    // A valid folder trains.
    let good = scratch("data-good");
    tiny_dataset(&good, 10);
    let ok = train(&out, &["--data", good.to_str().unwrap(), "--iters", "1"]);
    assert!(ok.status.success(), "{}", stderr(&ok));

    let truncated = scratch("data-truncated");
    tiny_dataset(&truncated, 10);
    let path = truncated.join("train-images-idx3-ubyte");
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() - 100]).unwrap();
    assert_fails_with(&run(&["--out", o, "--data", truncated.to_str().unwrap()]), "truncated");

    let magic = scratch("data-magic");
    tiny_dataset(&magic, 10);
    write_idx(&magic, "t10k-labels-idx1-ubyte", 0x0D01, &[10], &[1; 10]);
    assert_fails_with(
        &run(&["--out", o, "--data", magic.to_str().unwrap()]),
        "magic number 0x00000d01",
    );
    // Images where labels belong.
    write_idx(&magic, "t10k-labels-idx1-ubyte", 0x0803, &[10, 28, 28], &[0; 7840]);
    assert_fails_with(
        &run(&["--out", o, "--data", magic.to_str().unwrap()]),
        "labels need 0x00000801",
    );

    let counts = scratch("data-counts");
    tiny_dataset(&counts, 10);
    write_idx(&counts, "train-labels-idx1-ubyte", 0x0801, &[9], &[1; 9]);
    assert_fails_with(&run(&["--out", o, "--data", counts.to_str().unwrap()]), "9 labels");

    let gzip = scratch("data-gzip");
    tiny_dataset(&gzip, 10);
    std::fs::write(gzip.join("train-images-idx3-ubyte.gz"), [0x1f, 0x8b, 1, 2, 3]).unwrap();
    assert_fails_with(&run(&["--out", o, "--data", gzip.to_str().unwrap()]), "corrupt gzip");
}

#[test]
fn bad_checkpoints_and_outputs_are_clear_errors() {
    let out = scratch("bad-checkpoint");
    let o = out.to_str().unwrap();
    let garbage = out.join("garbage.safetensors");
    std::fs::write(&garbage, b"not a checkpoint").unwrap();
    assert_fails_with(
        &run(&["--out", o, "--resume", garbage.to_str().unwrap()]),
        "not a valid safetensors file",
    );
    assert_fails_with(
        &run(&["sample", "--checkpoint", garbage.to_str().unwrap()]),
        "not a valid safetensors file",
    );
    let missing = out.join("missing.safetensors");
    assert_fails_with(
        &run(&["sample", "--checkpoint", missing.to_str().unwrap()]),
        "cannot read checkpoint",
    );

    // A checkpoint of another architecture.
    assert!(train(&out, &["--iters", "1"]).status.success());
    let checkpoint = out.join("checkpoint.safetensors");
    assert_fails_with(
        &train(&out, &["--resume", checkpoint.to_str().unwrap(), "--seed", "5"]),
        "contradicts the checkpoint",
    );
    // A generator file holds no optimiser state: it cannot be resumed.
    let generator = out.join("generator.safetensors");
    assert_fails_with(
        &train(&out, &["--resume", generator.to_str().unwrap()]),
        "cannot be resumed",
    );

    // An output folder that cannot be created: a path through a regular file.
    let blocked = out.join("garbage.safetensors").join("run");
    assert_fails_with(
        &run(&["--out", blocked.to_str().unwrap(), "--iters", "1"]),
        "cannot create output folder",
    );
}

#[test]
fn a_folder_holding_a_run_is_refused_unless_resumed_or_overwritten() {
    let (first, second) = (scratch("held-first"), scratch("held-second"));
    assert!(train(&first, &["--iters", "2"]).status.success());
    let checkpoint = first.join("checkpoint.safetensors");
    let kept = std::fs::read(&checkpoint).unwrap();
    // A new run there would overwrite the checkpoint and mix its grids with the old ones.
    assert_fails_with(&train(&first, &["--iters", "1"]), "already holds a run");
    assert_eq!(std::fs::read(&checkpoint).unwrap(), kept, "the refused run wrote");
    // Resuming goes on in the checkpoint's folder without --out ...
    let c = checkpoint.to_str().unwrap();
    let mut resumed = vec!["train", "--resume", c, "--iters", "3"];
    resumed.extend_from_slice(TINY);
    let resumed = run(&resumed);
    assert!(resumed.status.success(), "{}", stderr(&resumed));
    assert_eq!(metrics(&first).len(), 3);
    // ... and is refused in a folder that holds another run, or below its iteration.
    assert!(train(&second, &["--iters", "1"]).status.success());
    assert_fails_with(
        &train(&second, &["--resume", c, "--iters", "4"]),
        "holds another run's checkpoint",
    );
    assert_fails_with(
        &train(&first, &["--resume", c, "--iters", "2"]),
        "below the checkpoint's iteration 3",
    );
    // --overwrite replaces the run: its grids and logs go, the new run's come.
    assert!(second.join("samples/iter_000001.png").exists());
    let replaced = train(&second, &["--iters", "2", "--overwrite", "--sample-every", "2"]);
    assert!(replaced.status.success(), "{}", stderr(&replaced));
    assert!(!second.join("samples/iter_000001.png").exists());
    assert!(second.join("samples/iter_000002.png").exists());
    assert_eq!(metrics(&second).len(), 2);
    // Without --out, a second run goes to a numbered folder beside the first, with a note.
    let cwd = scratch("held-default");
    let default_run = || {
        bin()
            .current_dir(&cwd)
            .args(["--iters", "1"])
            .args(TINY)
            .output()
            .unwrap()
    };
    let (one, two) = (default_run(), default_run());
    assert!(one.status.success() && two.status.success(), "{}", stderr(&two));
    assert!(stderr(&two).contains("note: runs/wgan-mnist holds an earlier run; this one goes to runs/wgan-mnist-2"));
    assert_eq!(metrics(&cwd.join("runs/wgan-mnist")).len(), 1);
    assert_eq!(metrics(&cwd.join("runs/wgan-mnist-2")).len(), 1);
}

#[test]
fn a_diverging_run_stops_names_the_quantity_and_never_an_earlier_runs_checkpoint() {
    let out = scratch("diverge");
    assert!(train(&out, &["--iters", "2"]).status.success());
    let checkpoint = out.join("checkpoint.safetensors");
    // An absurd learning rate overflows the weights at the first step. The run replaces the
    // one in the folder (--overwrite), whose checkpoint is not this run's to name.
    let result = train(
        &out,
        &[
            "--lr",
            "1e30",
            "--iters",
            "50",
            "--checkpoint-every",
            "1",
            "--overwrite",
        ],
    );
    assert_fails_with(&result, "training diverged at iteration 1");
    let err = stderr(&result);
    assert!(
        err.contains("critic_loss is") || err.contains("generator_loss is"),
        "{err}"
    );
    assert!(err.contains("no checkpoint was saved yet"), "{err}");
    assert!(!checkpoint.exists(), "the earlier run's checkpoint is still there");
    // The logs are saved (empty: no iteration finished), and the old run's are gone.
    assert!(metrics(&out).is_empty());
}

/// Serve the built-in data files over HTTP on 127.0.0.1 for `requests` requests.
fn serve_builtin(requests: usize) -> String {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/mnist");
    std::thread::spawn(move || {
        for stream in listener.incoming().take(requests) {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut request = String::new();
            let _ = reader.read_line(&mut request);
            let mut line = String::new();
            while reader.read_line(&mut line).map(|n| n > 2).unwrap_or(false) {
                line.clear();
            }
            let name = request
                .split_whitespace()
                .nth(1)
                .unwrap_or("/")
                .trim_start_matches('/')
                .to_string();
            let body = std::fs::read(root.join(&name)).unwrap_or_default();
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = stream.write_all(head.as_bytes());
            let _ = stream.write_all(&body);
        }
    });
    url
}

#[test]
fn download_checks_every_file_against_the_published_sha256() {
    // The built-in subset is not the published full MNIST: its checksum must be refused.
    let url = serve_builtin(1);
    let out = scratch("download");
    let dir = out.join("mnist");
    let result = run(&[
        "--out",
        out.to_str().unwrap(),
        "--download",
        dir.to_str().unwrap(),
        "--mirror",
        &url,
    ]);
    assert_fails_with(
        &result,
        "expected 440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
    );
    assert!(
        !dir.join("train-images-idx3-ubyte.gz").exists(),
        "a file that failed its checksum was kept"
    );
}

#[test]
fn ctrl_c_saves_a_checkpoint_and_exits_cleanly() {
    let out = scratch("ctrl-c");
    let mut args = vec![
        "train",
        "--out",
        out.to_str().unwrap(),
        "--iters",
        "100000",
        "--sample-every",
        "1",
    ];
    args.extend_from_slice(TINY);
    let child = bin()
        .args(&args)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("the binary starts");
    // Wait until training is under way, then interrupt it as Ctrl-C would.
    let first = out.join("samples/iter_000001.png");
    let start = std::time::Instant::now();
    while !first.exists() {
        assert!(start.elapsed().as_secs() < 60, "training did not start");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
    let result = child.wait_with_output().unwrap();
    let err = stderr(&result);
    assert!(result.status.success(), "{err}");
    assert!(
        err.contains("interrupted at iteration") && !err.contains("panicked"),
        "{err}"
    );
    // The checkpoint it saved resumes, for one more iteration.
    let interrupted_at: usize = err
        .split("interrupted at iteration ")
        .nth(1)
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok())
        .expect("the iteration it stopped at");
    let checkpoint = out.join("checkpoint.safetensors");
    let more = (interrupted_at + 1).to_string();
    let resumed = train(&out, &["--resume", checkpoint.to_str().unwrap(), "--iters", &more]);
    assert!(resumed.status.success(), "{}", stderr(&resumed));
}

#[test]
fn eval_every_scores_samples_into_metrics_and_a_plot_and_survives_a_resume() {
    let scoring = ["--eval-every", "2", "--eval-samples", "64", "--algo", "wgan-gp"];
    let whole = scratch("eval-every-whole");
    let mut args = scoring.to_vec();
    args.extend(["--iters", "4"]);
    let result = train(&whole, &args);
    assert!(result.status.success(), "{}", stderr(&result));
    let text = std::fs::read_to_string(whole.join("metrics.csv")).unwrap();
    let header: Vec<&str> = text.lines().next().unwrap().split(',').collect();
    let column = |name: &str| {
        header
            .iter()
            .position(|h| *h == name)
            .unwrap_or_else(|| panic!("no {name}"))
    };
    let rows = metrics(&whole);
    for (i, row) in rows.iter().enumerate() {
        let scored = (i + 1) % 2 == 0;
        assert_eq!(!row[column("frechet_distance")].is_empty(), scored, "row {}", i + 1);
        if scored {
            let fd: f64 = row[column("frechet_distance")].parse().unwrap();
            let score: f64 = row[column("classifier_score")].parse().unwrap();
            assert!(fd > 0.0 && (1.0..=10.0).contains(&score), "{row:?}");
            let counted: usize = (0..10)
                .map(|c| row[column(&format!("class_{c}"))].parse::<usize>().unwrap())
                .sum();
            assert_eq!(counted, 64, "the class histogram counts every sample");
        }
    }
    assert_eq!(decode_png(&whole.join("quality.png")), (1200, 800));
    // The run ends saying how good it got and where to look.
    let told = stderr(&result);
    for line in [
        "Wasserstein estimate at the end:",
        "on test images at iteration 4",
        "quality at iteration 4: FD ",
        "real images:",
        "measured by the built-in digit classifier",
        "best sample grid: ",
    ] {
        assert!(told.contains(line), "the summary lacks `{line}`:\n{told}");
    }
    let best = told
        .lines()
        .find_map(|l| l.trim().strip_prefix("best sample grid: "))
        .unwrap();
    let best = best.split(" (FD").next().unwrap();
    assert!(Path::new(best).exists(), "{best}");

    // A run stopped at 2 and resumed to 4 scores the same samples as the unbroken one.
    let parts = scratch("eval-every-parts");
    let mut args = scoring.to_vec();
    args.extend(["--iters", "2"]);
    assert!(train(&parts, &args).status.success());
    let checkpoint = parts.join("checkpoint.safetensors");
    let mut args = vec!["--resume", checkpoint.to_str().unwrap(), "--iters", "4"];
    args.extend(["--eval-every", "2", "--eval-samples", "64"]);
    let resumed = train(&parts, &args);
    assert!(resumed.status.success(), "{}", stderr(&resumed));
    for (a, b) in rows.iter().zip(metrics(&parts)) {
        assert_eq!((&a[0], &a[2..]), (&b[0], &b[2..]), "rows differ after the resume");
    }
    assert_fails_with(
        &train(
            &scratch("eval-every-bad"),
            &["--eval-every", "1", "--eval-samples", "1"],
        ),
        "--eval-samples must be at least 2",
    );
}

#[test]
fn eval_prints_the_quality_metrics_of_a_checkpoint() {
    let out = scratch("eval");
    assert!(train(&out, &["--iters", "1"]).status.success());
    let checkpoint = out.join("generator.safetensors");
    let result = run(&["eval", "--checkpoint", checkpoint.to_str().unwrap(), "--n", "50"]);
    let text = String::from_utf8_lossy(&result.stdout);
    assert!(result.status.success(), "{}", stderr(&result));
    for line in [
        "classifier score",
        "Frechet distance",
        "classes covered",
        "confidently classified",
    ] {
        assert!(text.contains(line), "missing {line}:\n{text}");
    }
    // The real test split scores as a near-perfect classifier would see it.
    let real_score: f64 = text
        .lines()
        .find(|l| l.starts_with("classifier score"))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|v| v.parse().ok())
        .expect("a score");
    assert!(real_score > 8.0, "{text}");
    assert_fails_with(
        &run(&["eval", "--checkpoint", checkpoint.to_str().unwrap(), "--n", "1"]),
        "--n must be at least 2",
    );
    // `sample` draws one grid: a size beyond 100 x 100 digits is refused, not attempted.
    let grid = out.join("grid.png");
    let c = checkpoint.to_str().unwrap();
    assert_fails_with(
        &run(&[
            "sample",
            "--checkpoint",
            c,
            "--n",
            "10000000000000",
            "--out",
            grid.to_str().unwrap(),
        ]),
        "--n must be between 1 and 10000",
    );
    // More than one batch of samples (500 a batch): one grid of them all, 23 columns by 22 rows.
    let drawn = run(&[
        "sample",
        "--checkpoint",
        c,
        "--n",
        "501",
        "--out",
        grid.to_str().unwrap(),
    ]);
    assert!(drawn.status.success(), "{}", stderr(&drawn));
    let (width, height) = decode_png(&grid);
    assert!(width > height && height > 21 * 28, "{width} x {height}");
}

/// Every SIMD path this processor has trains the same run: AVX2 and AVX-512 (the fused paths)
/// bit for bit, the portable path (which rounds before it adds) to within its rounding.
#[test]
fn every_simd_path_trains_the_same_run() {
    use earthmover_tensor::SimdPath;
    let losses = |path: SimdPath| -> Vec<Vec<f64>> {
        let out = scratch(&format!("simd-{path}"));
        let mut args = vec!["train", "--out", out.to_str().unwrap()];
        args.extend_from_slice(TINY);
        args.extend_from_slice(&["--iters", "4"]);
        let result = bin().args(&args).env("EARTHMOVER_SIMD", path.name()).output().unwrap();
        assert!(result.status.success(), "{path}: {}", stderr(&result));
        assert!(
            stderr(&result).contains(&format!("{path} kernels")),
            "{}",
            stderr(&result)
        );
        // critic_loss, generator_loss, wasserstein, penalty, grad_norm of each iteration.
        metrics(&out)
            .iter()
            .map(|row| row[2..7].iter().map(|v| v.parse().unwrap()).collect())
            .collect()
    };
    let paths = SimdPath::supported();
    let reference = losses(SimdPath::Portable);
    let mut fused: Option<Vec<Vec<f64>>> = None;
    for &path in paths.iter().filter(|&&p| p != SimdPath::Portable) {
        let run = losses(path);
        for (a, b) in run.iter().flatten().zip(reference.iter().flatten()) {
            assert!(
                (a - b).abs() <= 1e-2 * (1.0 + b.abs()),
                "{path} against portable: {a} and {b}"
            );
        }
        match &fused {
            None => fused = Some(run),
            Some(first) => assert_eq!(first, &run, "{path} against the other fused path"),
        }
    }
    eprintln!("SIMD paths trained here: {paths:?}");
}

/// A folder of MNIST-format images that are not digits: class `k` is a bright bar, vertical
/// at column `3 + 5k` for `k < 5`, horizontal at row `3 + 5 (k - 5)` otherwise (5 pixels apart,
/// so that the classifier's 2-pixel shifts keep the classes apart), its brightness and length
/// varying from image to image.
fn bars_dataset(dir: &Path, train: u32, test: u32) {
    let images = |n: u32, salt: u32| -> (Vec<u8>, Vec<u8>) {
        let (mut pixels, mut labels) = (vec![0u8; (n * 784) as usize], Vec::new());
        for i in 0..n {
            let class = (i * 7 + salt) % 10;
            let (brightness, start) = (150 + (i * 37 % 100) as u8, 2 + (i * 13 % 8));
            for along in start..26 {
                for across in [3 + 5 * (class % 5), 4 + 5 * (class % 5)] {
                    let (y, x) = if class < 5 { (along, across) } else { (across, along) };
                    pixels[(i * 784 + y * 28 + x) as usize] = brightness;
                }
            }
            labels.push(class as u8);
        }
        (pixels, labels)
    };
    let (pixels, labels) = images(train, 0);
    write_idx(dir, "train-images-idx3-ubyte", 0x0803, &[train, 28, 28], &pixels);
    write_idx(dir, "train-labels-idx1-ubyte", 0x0801, &[train], &labels);
    let (pixels, labels) = images(test, 3);
    write_idx(dir, "t10k-images-idx3-ubyte", 0x0803, &[test, 28, 28], &pixels);
    write_idx(dir, "t10k-labels-idx1-ubyte", 0x0801, &[test], &labels);
}

/// The generated and the real value of `eval`'s line starting with `label`.
fn eval_values(text: &str, label: &str) -> Option<(f64, f64)> {
    let line = text.lines().find(|l| l.starts_with(label))?;
    let mut values = line.split_whitespace().rev().map(|v| v.parse::<f64>().ok());
    let real = values.next()??;
    Some((values.next()??, real))
}

#[test]
fn other_images_are_scored_by_their_own_classifier_or_by_the_digit_features_alone() {
    let data = scratch("bars-data");
    bars_dataset(&data, 640, 60);
    let d = data.to_str().unwrap();
    let classifier = data.join("bars-classifier.safetensors");
    let c = classifier.to_str().unwrap();
    let trained = run(&["train-classifier", "--data", d, "--epochs", "6", "--out", c]);
    assert!(trained.status.success(), "{}", stderr(&trained));
    assert!(stderr(&trained).contains("test accuracy"), "{}", stderr(&trained));

    // With the matching classifier: every measurement, and config.json says which ruler.
    let scoring = ["--data", d, "--eval-every", "2", "--eval-samples", "64", "--iters", "2"];
    let own = scratch("bars-own");
    let mut args = scoring.to_vec();
    args.extend(["--classifier", c]);
    let result = train(&own, &args);
    assert!(result.status.success(), "{}", stderr(&result));
    let header = std::fs::read_to_string(own.join("metrics.csv")).unwrap();
    let header: Vec<&str> = header.lines().next().unwrap().split(',').collect();
    let column = |name: &str| header.iter().position(|h| *h == name).unwrap();
    let scored = &metrics(&own)[1];
    let score: f64 = scored[column("classifier_score")].parse().unwrap();
    assert!((1.0..=10.0).contains(&score), "{scored:?}");
    let settings = std::fs::read_to_string(own.join("config.json")).unwrap();
    assert!(settings.contains("bars-classifier.safetensors"), "{settings}");

    // Without one: the Frechet distance on the digit features alone, and a notice saying how
    // to train a matching classifier.
    let digit_features = scratch("bars-digit-features");
    let result = train(&digit_features, &scoring);
    assert!(result.status.success(), "{}", stderr(&result));
    assert!(
        stderr(&result).contains("train-classifier --data DIR"),
        "{}",
        stderr(&result)
    );
    let scored = &metrics(&digit_features)[1];
    assert!(!scored[column("frechet_distance")].is_empty(), "{scored:?}");
    assert!(scored[column("classifier_score")].is_empty(), "{scored:?}");
    assert!(scored[column("class_0")].is_empty(), "{scored:?}");

    // `eval` measures with the classifier it is given: the real bars score high on their own
    // classifier, and the digit classifier's features give another distance.
    let generator = own.join("generator.safetensors");
    let g = generator.to_str().unwrap();
    let with_own = run(&["eval", "--checkpoint", g, "--n", "64", "--data", d, "--classifier", c]);
    assert!(with_own.status.success(), "{}", stderr(&with_own));
    let own_text = String::from_utf8_lossy(&with_own.stdout).into_owned();
    let real_score = eval_values(&own_text, "classifier score").map(|(_, real)| real);
    assert!(real_score.is_some_and(|s| s > 8.0), "{own_text}");
    let with_digits = run(&["eval", "--checkpoint", g, "--n", "64", "--data", d]);
    assert!(with_digits.status.success(), "{}", stderr(&with_digits));
    let digit_text = String::from_utf8_lossy(&with_digits.stdout).into_owned();
    assert!(!digit_text.contains("classifier score"), "{digit_text}");
    assert!(digit_text.contains("features alone"), "{digit_text}");
    let fd = |text: &str| eval_values(text, "Frechet distance").expect("a distance");
    assert_ne!(fd(&own_text), fd(&digit_text), "two rulers, two distances");

    // A classifier cannot be trained on more than ten classes, nor loaded from another file.
    let many = scratch("bars-many-classes");
    tiny_dataset(&many, 4);
    write_idx(&many, "train-labels-idx1-ubyte", 0x0801, &[4], &[0, 1, 12, 3]);
    let out = many.join("c.safetensors");
    assert_fails_with(
        &run(&[
            "train-classifier",
            "--data",
            many.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ]),
        "this data has label 12",
    );
    // An --out that cannot be written is refused before the training, not after it.
    assert_fails_with(
        &run(&[
            "train-classifier",
            "--data",
            d,
            "--epochs",
            "1",
            "--out",
            many.to_str().unwrap(),
        ]),
        "is a folder",
    );
    assert_fails_with(
        &run(&["eval", "--checkpoint", g, "--n", "64", "--data", d, "--classifier", g]),
        "is not a classifier file",
    );
}
