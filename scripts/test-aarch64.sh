#!/usr/bin/env bash
# The CPU checks on aarch64, from an x86-64 machine: cross-compiled for
# aarch64-unknown-linux-gnu and run under qemu-user, so that the NEON path (and the portable
# one, as an aarch64 build compiles it) is built, linted and tested where no ARM machine is.
#
#   scripts/test-aarch64.sh            # install what is missing, lint, run the checks
#
# What it installs when missing: rustup's aarch64 standard library, and Debian's cross gcc
# (the linker) and qemu-user (the runner). Where they cannot be installed (no network, no
# apt), it says so and exits 0, unless EARTHMOVER_REQUIRE_AARCH64=1 (then it fails); a check
# that fails always fails the script.
#
# What it runs, about 10 minutes on 2 cores (a release build, most of the time): clippy for
# the target; the whole workspace's tests but wgan-mnist's (those spawn the program, which
# the kernel cannot run outside qemu) on the default path, NEON (the kernels' unit tests run
# every path the processor has: NEON and portable, NEON against the reference and the
# portable path); and the per-path checks of .ci/run (gradchecks, edges, half precision)
# again with EARTHMOVER_SIMD=portable. Release builds: the emulated f64 gradient checks take
# minutes in a debug build; the x86-64 run of .ci/run keeps the debug assertions.
set -euo pipefail
cd "$(dirname "$0")/.."

target=aarch64-unknown-linux-gnu
sysroot=/usr/aarch64-linux-gnu

skip() {
  if [[ "${EARTHMOVER_REQUIRE_AARCH64:-0}" == 1 ]]; then
    echo "aarch64 checks: cannot run: $1" >&2
    exit 1
  fi
  echo "aarch64 checks: SKIPPED: $1"
  exit 0
}

if ! rustup target list --installed 2>/dev/null | grep -qx "$target"; then
  rustup target add "$target" >/dev/null 2>&1 || skip "rustup could not add the $target standard library"
fi

if ! command -v aarch64-linux-gnu-gcc >/dev/null 2>&1 || ! command -v qemu-aarch64 >/dev/null 2>&1 ||
  [[ ! -d "$sysroot/lib" ]]; then
  command -v apt-get >/dev/null 2>&1 || skip "no apt-get to install gcc-aarch64-linux-gnu and qemu-user"
  sudo=""
  if [[ "$(id -u)" != 0 ]]; then
    command -v sudo >/dev/null 2>&1 || skip "not root and no sudo to install gcc-aarch64-linux-gnu and qemu-user"
    sudo="sudo -n"
  fi
  packages=(gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user)
  install() { DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q "${packages[@]}" >/dev/null 2>&1; }
  install || { $sudo apt-get update -q >/dev/null 2>&1 && install; } ||
    skip "apt-get could not install ${packages[*]}"
fi

# NVRTC is an x86-64 library here (CI installs it and requires it): the aarch64 tests cannot
# load it and skip the NVRTC checks, which .ci/run's x86-64 stages run.
unset EARTHMOVER_REQUIRE_NVRTC
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER="qemu-aarch64 -L $sysroot"
export CC_aarch64_unknown_linux_gnu=aarch64-linux-gnu-gcc

echo "== aarch64: cargo clippy --target $target"
cargo clippy --target "$target" --workspace --all-targets -- -D warnings

echo "== aarch64: the workspace's tests (but wgan-mnist's, which spawn the program), on NEON"
cargo test --release --target "$target" --workspace --exclude wgan-mnist

echo "== aarch64: the CPU checks on the portable path"
EARTHMOVER_SIMD=portable cargo test --release --target "$target" --test edges --test grad_elementwise \
  --test grad_reduce --test grad_layout --test grad_matmul --test grad_conv --test grad_norm --test grad_loss \
  --test grad_composition --test half_precision
