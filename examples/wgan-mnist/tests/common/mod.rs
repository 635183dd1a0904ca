//! What the binary's end-to-end test files share: the binary, scratch folders, and tiny but
//! real training settings.

use std::path::PathBuf;
use std::process::{Command, Output};

pub fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_wgan-mnist"))
}

/// A fresh folder under the target directory's tmp space, unique per test file and test.
pub fn scratch(file: &str, name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("{file}-{name}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Tiny but real settings, so that an iteration takes a fraction of a second.
pub const TINY: &[&str] = &[
    "--dim",
    "4",
    "--batch-size",
    "8",
    "--n-critic",
    "2",
    "--test-every",
    "2",
    // Scoring samples has a test of its own.
    "--eval-every",
    "0",
    "--quiet",
];
