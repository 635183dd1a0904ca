//! The defaults a run starts from, and how a user leaves them: `--help` shows every default
//! (per algorithm where they differ), `--paper` starts from the papers' settings instead,
//! `--ema off` turns the default weight average off, and a resumed run refuses a flag that
//! contradicts its checkpoint.

mod common;

use common::{bin, stderr, TINY};
use std::path::Path;
use std::process::Output;

fn scratch(name: &str) -> std::path::PathBuf {
    common::scratch("defaults", name)
}

/// Train a tiny run into `out` with `extra` flags, for 2 iterations unless they say.
fn train(out: &Path, extra: &[&str]) -> Output {
    let iters: &[&str] = if extra.contains(&"--iters") {
        &[]
    } else {
        &["--iters", "2"]
    };
    bin()
        .args(["train", "--out", out.to_str().unwrap()])
        .args(iters)
        .args(TINY)
        .args(extra)
        .output()
        .expect("the binary runs")
}

/// The training settings a run wrote into its config.json.
fn settings(out: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(out.join("config.json")).expect("config.json written");
    let config: serde_json::Value = serde_json::from_str(&text).unwrap();
    config["training"].clone()
}

fn assert_fails_with(out: &Output, needle: &str) {
    let err = stderr(out);
    assert!(!out.status.success(), "expected failure; stderr:\n{err}");
    assert!(!err.contains("panicked"), "panicked:\n{err}");
    assert!(err.contains(needle), "expected `{needle}` in:\n{err}");
}

#[test]
fn the_defaults_the_paper_flag_and_ema_off_give_the_settings_they_say() {
    /// A run's name, its flags, and the lr, betas and EMA decay it must train with.
    type Case<'a> = (&'a str, &'a [&'a str], f64, [f64; 2], Option<f64>);
    let cases: [Case; 5] = [
        // The measured defaults.
        ("default", &[], 2e-4, [0.5, 0.9], Some(0.999)),
        // The paper's Algorithm 1.
        ("paper", &["--paper"], 1e-4, [0.0, 0.9], None),
        // Flags still override `--paper`.
        (
            "paper-lr",
            &["--paper", "--lr", "3e-4", "--ema", "0.99"],
            3e-4,
            [0.0, 0.9],
            Some(0.99),
        ),
        ("ema-off", &["--ema", "off"], 2e-4, [0.5, 0.9], None),
        // WGAN keeps its paper's RMSProp settings by default.
        ("wgan", &["--algo", "wgan"], 5e-5, [0.0, 0.9], None),
    ];
    for (name, flags, lr, betas, ema) in cases {
        let out = scratch(name);
        let run = train(&out, flags);
        assert!(run.status.success(), "{name}: {}", stderr(&run));
        let s = settings(&out);
        assert_eq!(s["lr"].as_f64(), Some(lr), "{name}: {s}");
        assert_eq!(s["betas"], serde_json::json!(betas), "{name}: {s}");
        assert_eq!(s["ema"].as_f64(), ema, "{name}: {s}");
    }
}

#[test]
fn a_resume_refuses_paper_or_ema_flags_that_contradict_its_checkpoint() {
    let default = scratch("resume-default");
    assert!(train(&default, &[]).status.success());
    let checkpoint = default.join("checkpoint.safetensors");
    let resume = |flags: &[&str]| {
        let mut args = vec!["--resume", checkpoint.to_str().unwrap(), "--iters", "3"];
        args.extend_from_slice(flags);
        train(&default, &args)
    };
    assert_fails_with(
        &resume(&["--ema", "off"]),
        "--ema off contradicts the checkpoint, which was trained with --ema 0.999",
    );
    assert_fails_with(
        &resume(&["--paper"]),
        "--paper contradicts the checkpoint, which was trained with lr 0.0002, betas 0.5,0.9",
    );
    // The same command with `--resume` added goes on.
    let paper = scratch("resume-paper");
    assert!(train(&paper, &["--paper"]).status.success());
    let checkpoint = paper.join("checkpoint.safetensors");
    let resumed = train(
        &paper,
        &["--paper", "--resume", checkpoint.to_str().unwrap(), "--iters", "3"],
    );
    assert!(resumed.status.success(), "{}", stderr(&resumed));
    // A bad decay is a clear error.
    assert_fails_with(
        &train(&scratch("bad-ema"), &["--ema", "often"]),
        "expected a decay such as 0.999, or `off`",
    );
}

#[test]
fn help_explains_every_flag() {
    let help = bin().args(["train", "--help"]).output().unwrap();
    let text = String::from_utf8_lossy(&help.stdout);
    for flag in [
        "--algo",
        "--model",
        "--dim",
        "--critic-norm",
        "--iters",
        "--batch-size",
        "--n-critic",
        "--lr",
        "--betas",
        "--clip",
        "--lambda",
        "--seed",
        "--data",
        "--out",
        "--overwrite",
        "--device",
        "--resume",
        "--sample-every",
        "--checkpoint-every",
        "--download",
        "--ema",
        "--paper",
    ] {
        assert!(text.contains(flag), "--help lacks {flag}:\n{text}");
    }
    // Every default is shown, per algorithm where they differ.
    for default in [
        "[default: wgan-gp]",
        "[default: 32]",
        "[default: wgan-gp: 7000, wgan: 2000, gan: 2000]",
        "[default: wgan-gp: 2, wgan: 5, gan: 1]",
        "[default: wgan-gp: 0.0002, wgan: 0.00005, gan: 0.0002]",
        "[default: wgan-gp: 0.5,0.9, wgan: none, gan: 0.5,0.999]",
        "[default: 0.01]",
        "[default: 10]",
        "[default: wgan-gp: 0.999, wgan: off, gan: off]",
        // --no-critic-warmup's: the warm-up's own state, said as such.
        "[default: wgan-gp: warm-up off, wgan: warm-up on, gan: warm-up off]",
        "[default: runs/wgan-mnist (or runs/wgan-mnist-2, -3, ... where it holds an earlier run); with --resume, the checkpoint's folder]",
        "[default: the 10,000 digits built in]",
    ] {
        assert!(text.contains(default), "--help lacks {default}:\n{text}");
    }
}
