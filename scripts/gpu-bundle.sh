#!/usr/bin/env bash
# Build the GPU bundle: everything scripts/gpu-check.sh runs, as ready binaries, for a GPU
# machine that has a driver and Python (PyTorch) but no cargo, no registry and no network.
#
#   scripts/gpu-bundle.sh DIR        then copy DIR over and run  DIR/run.sh LOGDIR  there
#
# DIR gets bin/ (the GPU test and bench binaries, release code without debug info or symbols:
# the `gpu-bundle` profile; gzipped, run.sh unpacks them), data/mnist (what gpu_training and the train_step bench read; the
# binaries find it beside themselves at run time), reference/ (PyTorch's scripts), run.sh
# (scripts/gpu-bundle-run.sh) and MANIFEST (the commit and toolchain it was built from). The
# kernels' CUDA sources are compiled into the binaries (crates/kernels/src/cuda/mod.rs), so no
# .cu file travels. The bundle must stay under 40 MiB, what a session may carry to a GPU
# machine with room to spare; the script fails past it.
set -euo pipefail
if [[ $# -ne 1 ]]; then
  echo "usage: $0 DIR" >&2
  exit 2
fi
repo="$(cd "$(dirname "$0")/.." && pwd)"
mkdir -p "$1"
out="$(cd "$1" && pwd)"
cd "$repo"
limit_mib=40

# The binaries gpu-check.sh runs: the GPU tests, every finite-difference file (they run on the
# CPU and on GPU 0), NVRTC's compile test, and the two GPU benchmarks (harness = false: a test
# build of them is the bench's own main).
root_tests=(gpu_parity gpu_training grad_checker grad_elementwise grad_reduce grad_layout grad_matmul
  grad_conv grad_norm grad_loss grad_composition)
# The kernels crate's device tests: every kernel against its CPU twin, the tensor cores lane by
# lane, the 16-bit kernels, the counters and failures, on GPU 0 (CI runs them in the emulator).
kernel_tests=(cuda_kernels conv_kernels fused_kernels tensor_cores conv_tensor_cores half_kernels device_counters device_failure)
benches=(gpu_kernels train_step)

args=(--profile gpu-bundle --no-run --message-format=json)
for t in "${root_tests[@]}"; do args+=(--test "$t"); done
for b in "${benches[@]}"; do args+=(--bench "$b"); done

echo "== building the bundle's binaries (profile gpu-bundle)"
json="$(mktemp)"
trap 'rm -f "$json"' EXIT
cargo test "${args[@]}" >"$json"
kernel_args=(-p earthmover-kernels --test nvrtc --profile gpu-bundle --no-run --message-format=json)
for t in "${kernel_tests[@]}"; do kernel_args+=(--test "$t"); done
cargo test "${kernel_args[@]}" >>"$json"

rm -rf "$out/bin" "$out/data" "$out/reference"
mkdir -p "$out/bin" "$out/data" "$out/reference"
# Each compiled test or bench target's executable, copied under its target's name.
python3 - "$json" "$out/bin" <<'EOF'
import json, shutil, sys
wanted_kinds = {"test", "bench"}
copied = set()
for line in open(sys.argv[1]):
    if not line.startswith("{"):
        continue
    message = json.loads(line)
    if message.get("reason") != "compiler-artifact" or not message.get("executable"):
        continue
    target = message["target"]
    if not wanted_kinds & set(target["kind"]):
        continue
    shutil.copy2(message["executable"], f"{sys.argv[2]}/{target['name']}")
    copied.add(target["name"])
print("binaries:", " ".join(sorted(copied)))
EOF
for name in "${root_tests[@]}" "${kernel_tests[@]}" "${benches[@]}" nvrtc; do
  if [[ ! -x "$out/bin/$name" ]]; then
    echo "error: cargo built no executable for $name" >&2
    exit 1
  fi
done
raw_bytes=$(du -cb "$out"/bin/* | tail -1 | cut -f1)
# Each binary holds the whole engine (about 3 MiB apiece, 63 MiB in all), and gzip takes them
# to a third: run.sh unpacks them on the GPU machine, where gzip is always there.
gzip -9 "$out"/bin/*

cp -r data/mnist "$out/data/mnist"
cp benches/reference/*.py "$out/reference/"
cp scripts/gpu-bundle-run.sh "$out/run.sh"
chmod +x "$out/run.sh"

{
  echo "commit: $(git rev-parse HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD 2>/dev/null || echo ' (with uncommitted changes)')"
  echo "built: $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(uname -m)"
  echo "rustc: $(rustc --version)"
  # The newest glibc symbol the binaries need: the GPU machine's glibc must be at least that.
  if command -v objdump >/dev/null 2>&1; then
    echo "needs glibc: $(for f in "$out"/bin/*.gz; do gzip -dc "$f" >"$json.bin" && objdump -T "$json.bin"; done 2>/dev/null |
      grep -o 'GLIBC_[0-9.]*' | sort -uV | tail -1)"
    rm -f "$json.bin"
  fi
} >"$out/MANIFEST"

size_bytes=$(du -sb "$out" | cut -f1)
size_mib=$(awk -v b="$size_bytes" 'BEGIN { printf "%.1f", b / 1048576 }')
echo "bundle: $out, $size_mib MiB (limit $limit_mib MiB; the binaries $(awk -v b="$raw_bytes" 'BEGIN { printf "%.1f", b / 1048576 }') MiB unpacked)"
if ((size_bytes >= limit_mib * 1048576)); then
  echo "error: the bundle is $size_mib MiB, over the $limit_mib MiB limit" >&2
  exit 1
fi
