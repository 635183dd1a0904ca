//! The output folder of `wgan-mnist train`: locked against a second run while one writes into
//! it (a lock a dead process left behind blocks nothing), and a line naming a written file is
//! printed only once that file exists; a write that fails is an error instead.

mod common;

use common::{bin, stderr, TINY};
use std::path::{Path, PathBuf};
use std::process::{Child, Output, Stdio};
use std::time::{Duration, Instant};

fn scratch(name: &str) -> PathBuf {
    common::scratch("outputs", name)
}

fn train_args(out: &Path, extra: &[&str]) -> Vec<String> {
    let mut args = vec!["train".to_string(), "--out".to_string(), out.display().to_string()];
    args.extend(TINY.iter().chain(extra).map(|a| a.to_string()));
    args
}

fn train(out: &Path, extra: &[&str]) -> Output {
    bin().args(train_args(out, extra)).output().expect("the binary runs")
}

/// Kills the child when dropped, so that a failing test leaves no run behind.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Every file a `-> FILE` or `wrote ... FILE` line names exists.
fn assert_named_files_exist(err: &str) {
    for line in err.lines() {
        if let Some((_, path)) = line.split_once("  -> ") {
            assert!(
                Path::new(path.trim()).exists(),
                "{line}\nnames a missing file; stderr:\n{err}"
            );
        }
    }
}

#[test]
fn a_folder_in_use_is_refused_and_a_dead_runs_lock_blocks_nothing() {
    let out = scratch("lock").join("run");
    let mut first = Running(
        bin()
            .args(train_args(
                &out,
                &[
                    "--iters",
                    "1000000",
                    "--sample-every",
                    "1000000",
                    "--checkpoint-every",
                    "1000000",
                ],
            ))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("the binary runs"),
    );
    let pid = first.0.id().to_string();
    let lock = out.join(".wgan-mnist.lock");
    let start = Instant::now();
    // Locked, and set up: config.json is its last write before training.
    let locked = || std::fs::read_to_string(&lock).is_ok_and(|s| s.trim() == pid);
    while !(locked() && out.join("config.json").exists()) {
        assert!(first.0.try_wait().unwrap().is_none(), "the first run ended early");
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "the first run never locked {}",
            out.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let listing = |dir: &Path| {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    };
    let before = listing(&out);
    let second = train(&out, &["--iters", "2"]);
    let err = stderr(&second);
    assert!(!second.status.success(), "the second run succeeded:\n{err}");
    assert!(!err.contains("panicked"), "{err}");
    let expected = format!("error: {} is in use by another wgan-mnist (pid {pid}", out.display());
    assert!(
        err.contains(&expected) && err.contains("wait for it or choose another --out"),
        "expected `{expected}` in:\n{err}"
    );
    assert!(!err.contains("networks (dim"), "the second run started:\n{err}");
    // It touched nothing: no file of its own, and the lock still names the first run.
    assert_eq!(listing(&out), before);
    assert_eq!(std::fs::read_to_string(&lock).unwrap().trim(), pid);

    // A crash (killed outright) leaves the lock file, but not the lock.
    drop(first);
    assert!(lock.exists());
    let third = train(&out, &["--iters", "2"]);
    assert!(
        third.status.success(),
        "a dead run's lock file blocked a new run:\n{}",
        stderr(&third)
    );
    assert!(out.join("checkpoint.safetensors").exists());
}

#[test]
fn a_file_that_cannot_be_written_is_an_error_and_never_named_as_written() {
    // A folder where the second sample grid goes: its rename fails, as it would on a full disk.
    let out = scratch("blocked-sample");
    let blocked = out.join("samples").join("iter_000004.png");
    std::fs::create_dir_all(&blocked).unwrap();
    let run = train(&out, &["--iters", "6", "--sample-every", "2"]);
    let err = stderr(&run);
    assert!(!run.status.success() && !err.contains("panicked"), "{err}");
    assert!(
        err.contains("error: cannot rename a temporary file onto") && err.contains("iter_000004.png"),
        "{err}"
    );
    // The grid before it was written and named; the one that failed is not named as written.
    assert!(err.contains("-> ") && err.contains("iter_000002.png"), "{err}");
    assert!(
        !err.lines().any(|l| l.contains("-> ") && l.contains("iter_000004.png")),
        "{err}"
    );
    assert!(!err.contains("done:"), "{err}");
    assert_named_files_exist(&err);
    let leftovers: Vec<_> = std::fs::read_dir(out.join("samples"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".tmp-"))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");

    // The checkpoint at the end: no summary claims the outputs are complete.
    let out = scratch("blocked-checkpoint");
    std::fs::create_dir_all(out.join("checkpoint.safetensors")).unwrap();
    let run = train(&out, &["--iters", "2"]);
    let err = stderr(&run);
    assert!(!run.status.success() && !err.contains("panicked"), "{err}");
    assert!(
        err.contains("error:") && err.contains("checkpoint.safetensors"),
        "{err}"
    );
    assert!(!err.contains("done:"), "{err}");
    assert_named_files_exist(&err);

    // `sample` into a folder that is a file: an error, and no `wrote` line.
    let trained = scratch("sample-source");
    assert!(train(&trained, &["--iters", "2"]).status.success());
    let file = trained.join("in-the-way");
    std::fs::write(&file, b"x").unwrap();
    let target = file.join("grid.png");
    let run = bin()
        .args(["sample", "--checkpoint"])
        .arg(trained.join("generator.safetensors"))
        .arg("--out")
        .arg(&target)
        .output()
        .unwrap();
    let err = stderr(&run);
    assert!(!run.status.success() && !err.contains("panicked"), "{err}");
    assert!(
        err.contains("error:") && err.contains("grid.png") && !err.contains("wrote"),
        "{err}"
    );
    assert!(!target.exists());
}
