//! `--precision f16` end to end: the run says it scales its losses, writes each network's loss
//! scale and skipped steps into metrics.csv (empty cells in f32), keeps the scales in its
//! checkpoint so that a resumed run matches an unbroken one, and a precision the program does
//! not know is a clear error.

mod common;

use common::{bin, stderr, TINY};
use std::path::Path;
use std::process::Output;

fn scratch(name: &str) -> std::path::PathBuf {
    common::scratch("precision", name)
}

fn train(out: &Path, extra: &[&str]) -> Output {
    let mut args = vec!["train", "--out", out.to_str().unwrap()];
    args.extend_from_slice(TINY);
    args.extend_from_slice(extra);
    bin().args(&args).output().expect("the binary runs")
}

/// metrics.csv as its header and its rows, each split into cells.
fn metrics(out: &Path) -> (Vec<String>, Vec<Vec<String>>) {
    let text = std::fs::read_to_string(out.join("metrics.csv")).expect("metrics.csv written");
    let mut lines = text
        .lines()
        .map(|l| l.split(',').map(str::to_string).collect::<Vec<_>>());
    (lines.next().expect("a header"), lines.collect())
}

fn column(header: &[String], name: &str) -> usize {
    header
        .iter()
        .position(|h| h == name)
        .unwrap_or_else(|| panic!("no column {name} in {header:?}"))
}

#[test]
fn an_f16_run_logs_its_loss_scales_and_resumes_at_them() {
    let whole = scratch("f16-whole");
    let result = train(&whole, &["--precision", "f16", "--iters", "4"]);
    let told = stderr(&result);
    assert!(result.status.success(), "{told}");
    assert!(
        told.contains("mixed precision f16 with dynamic loss scaling: scale 65536 (critic) and 65536 (generator)"),
        "the header names the scaling:\n{told}"
    );
    assert!(
        told.contains("loss scaling: 1 critic and 0 generator steps skipped in all"),
        "{told}"
    );
    let (header, rows) = metrics(&whole);
    let (scale, skipped) = (column(&header, "critic_loss_scale"), column(&header, "critic_skipped"));
    let generator_scale = column(&header, "generator_loss_scale");
    // 2^16 overflows f16 in the penalty's inner gradient: the first critic step is skipped.
    assert_eq!((rows[0][scale].as_str(), rows[0][skipped].as_str()), ("32768.0", "1"));
    for row in &rows[1..] {
        assert_eq!((row[scale].as_str(), row[skipped].as_str()), ("32768.0", "0"));
        assert_eq!(row[generator_scale], "65536.0");
    }

    // Stopped at 2 and resumed to 4: the checkpoint's scales go on, and so does the run.
    let parts = scratch("f16-parts");
    assert!(train(&parts, &["--precision", "f16", "--iters", "2"]).status.success());
    let checkpoint = parts.join("checkpoint.safetensors");
    let resumed = train(&parts, &["--resume", checkpoint.to_str().unwrap(), "--iters", "4"]);
    let told = stderr(&resumed);
    assert!(resumed.status.success(), "{told}");
    assert!(told.contains("scale 32768 (critic) and 65536 (generator)"), "{told}");
    assert!(told.contains("1 critic and 0 generator steps skipped so far"), "{told}");
    let (_, resumed_rows) = metrics(&parts);
    assert_eq!(resumed_rows.len(), 4);
    for (a, b) in rows.iter().zip(&resumed_rows) {
        // Every column but the wall-clock seconds.
        assert_eq!((&a[0], &a[2..]), (&b[0], &b[2..]), "rows differ after the resume");
    }
    let err = stderr(&train(
        &parts,
        &["--resume", checkpoint.to_str().unwrap(), "--precision", "f32"],
    ));
    assert!(err.contains("--precision F32 contradicts the checkpoint"), "{err}");

    // An f32 run scales nothing: its loss-scale cells are empty.
    let plain = scratch("f32");
    assert!(train(&plain, &["--iters", "1"]).status.success());
    let (header, rows) = metrics(&plain);
    assert!(
        rows[0][column(&header, "critic_loss_scale")].is_empty(),
        "{:?}",
        rows[0]
    );
}

#[test]
fn an_unknown_precision_is_a_clear_error_and_help_names_f16() {
    let out = train(&scratch("f8"), &["--precision", "f8"]);
    let err = stderr(&out);
    assert!(!out.status.success() && !err.contains("panicked"), "{err}");
    assert!(
        err.contains("unknown precision `f8`: expected f32, bf16 or f16"),
        "{err}"
    );
    let help = bin().args(["train", "--help"]).output().unwrap();
    let text = String::from_utf8_lossy(&help.stdout);
    assert!(text.contains("--precision <f32|bf16|f16>"), "{text}");
    assert!(text.contains("scales each network's loss dynamically"), "{text}");
}
