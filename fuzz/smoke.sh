#!/usr/bin/env bash
# Build each fuzz target and run it briefly from its seeds (docs/fuzzing.md): CI's smoke run.
# Exits non-zero when a target crashes (libFuzzer then leaves the input in fuzz/artifacts/).
# FUZZ_SMOKE_RUNS sets the runs per target (20000 by default).
set -euo pipefail
cd "$(dirname "$0")"
# cargo-fuzz passes nightly flags (-Zsanitizer, -Cpasses=sancov-module ...) to a stable
# toolchain; `-s none` needs no sanitizer runtime.
export RUSTC_BOOTSTRAP=1
if ! command -v cargo-fuzz >/dev/null 2>&1; then
  cargo install --locked cargo-fuzz --version 0.13.2
fi
runs="${FUZZ_SMOKE_RUNS:-20000}"
cargo fuzz build -s none --debug-assertions --release
for target_len in idx:4096 checkpoint:131072; do
  target="${target_len%%:*}" max_len="${target_len##*:}"
  corpus="$(mktemp -d)" log="$(mktemp)"
  echo "-- $target: $runs runs from fuzz/seeds/$target"
  if ! cargo fuzz run "$target" -s none --debug-assertions --release "$corpus" "seeds/$target" -- \
    -runs="$runs" -max_total_time=120 -max_len="$max_len" -rss_limit_mb=2048 >"$log" 2>&1; then
    tail -n 60 "$log"
    echo "fuzz target $target crashed: the input is in fuzz/artifacts/$target/" >&2
    exit 1
  fi
  grep -E '^Done ' "$log"
  rm -rf "$corpus" "$log"
done
