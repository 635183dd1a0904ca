#!/usr/bin/env bash
# The GPU bundle's run.sh (written by scripts/gpu-bundle.sh): every GPU test and benchmark of
# scripts/gpu-check.sh, from ready binaries, on a machine with a driver and nothing else of ours
# (no cargo, pip or network). PyTorch's reference scripts run when torch imports.
#
#   ./run.sh [LOGDIR]        (default: ./gpu-logs in the current directory)
#
# It prints NVRTC's and the driver's versions first, runs each stage under its own timeout, and
# ends with a table (stage, result, seconds, note), also in LOGDIR/summary.txt. A stage is
# `skip` when its binary said `skipped: <why>` (no GPU, no NVRTC, no PyTorch), `FAIL` on a
# non-zero exit or a timeout. The exit status is 1 when any stage failed. The stages stop
# after BUNDLE_BUDGET_S seconds in all (default 450: a GPU machine is lent for about 15
# minutes, its start included); the ones left are `skip (out of time)`.
#
# NVRTC is found by a probe: already on the library path, else the CUDA toolkit's lib64, else
# the nvidia/cu13/lib or nvidia/cuda_nvrtc/lib of an installed Python package (PyTorch's).
# EARTHMOVER_NVRTC_DIR names a folder to use instead; EARTHMOVER_DATA another MNIST folder.
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
logs="$(mkdir -p "${1:-gpu-logs}" && cd "${1:-gpu-logs}" && pwd)"
budget="${BUNDLE_BUDGET_S:-450}"
start_all=$SECONDS
sed 's/^/bundle /' "$here/MANIFEST" 2>/dev/null
echo "logs: $logs"

# The binaries travel gzipped: unpack them beside their .gz (where they find data/ as an
# ancestor's), or, in a read-only bundle, into the log folder with EARTHMOVER_DATA set.
bin="$here/bin"
if ! touch "$bin/.writable" 2>/dev/null; then
  bin="$logs/bin"
  export EARTHMOVER_DATA="${EARTHMOVER_DATA:-$here/data}"
fi
rm -f "$here/bin/.writable"
mkdir -p "$bin"
unpacked=()
# The bundle leaves as it came (21 MiB, not 63): the unpacked binaries go at the end.
trap 'rm -f "${unpacked[@]}"' EXIT
for packed in "$here"/bin/*.gz; do
  name="$(basename "$packed" .gz)"
  unpacked+=("$bin/$name")
  if ! gzip -dc "$packed" >"$bin/$name" || ! chmod +x "$bin/$name"; then
    echo "error: cannot unpack $packed into $bin" >&2
    exit 1
  fi
done

# ------------------------------------------------------------------ NVRTC and the driver

python=""
for p in python3 python; do
  if command -v "$p" >/dev/null 2>&1; then python="$p" && break; fi
done

# Whether libnvrtc (CUDA 13, or 12) loads with the current LD_LIBRARY_PATH.
nvrtc_loads() {
  if [[ -n "$python" ]]; then
    "$python" - <<'EOF' 2>/dev/null
import ctypes, sys
for name in ("libnvrtc.so.13", "libnvrtc.so.12", "libnvrtc.so"):
    try:
        ctypes.CDLL(name)
        sys.exit(0)
    except OSError:
        pass
sys.exit(1)
EOF
  else
    ldconfig -p 2>/dev/null | grep -q 'libnvrtc\.so' ||
      tr ':' '\n' <<<"${LD_LIBRARY_PATH:-}" | while read -r d; do ls "$d"/libnvrtc.so.1[23]* 2>/dev/null; done | grep -q .
  fi
}

# Folders that may hold libnvrtc, best first: CUDA 13's before 12's.
nvrtc_candidates() {
  [[ -n "${EARTHMOVER_NVRTC_DIR:-}" ]] && echo "$EARTHMOVER_NVRTC_DIR"
  local sites=()
  if [[ -n "$python" ]]; then
    mapfile -t sites < <("$python" -c 'import site, sys
for p in site.getsitepackages() + [site.getusersitepackages()] + sys.path:
    print(p)' 2>/dev/null)
  fi
  # Python environments a GPU machine may keep PyTorch in, besides the first python's.
  local prefix
  for prefix in "${VIRTUAL_ENV:-}" "${CONDA_PREFIX:-}" /opt/conda /usr/local /usr "${HOME:-}/.local"; do
    [[ -n "$prefix" ]] || continue
    for s in "$prefix"/lib/python3*/site-packages "$prefix"/lib/python3*/dist-packages; do
      [[ -d "$s" ]] && sites+=("$s")
    done
  done
  sites+=(/usr/lib/python3/dist-packages)
  for sub in nvidia/cu13/lib nvidia/cuda_nvrtc/lib; do
    for s in "${sites[@]}"; do [[ -d "$s/$sub" ]] && echo "$s/$sub"; done
  done
  for d in "${CUDA_HOME:-/usr/local/cuda}/lib64" /usr/local/cuda/lib64 /usr/local/cuda-13*/lib64 /usr/local/cuda-12*/lib64; do
    [[ -d "$d" ]] && echo "$d"
  done
}

nvrtc_dir=""
if nvrtc_loads; then
  nvrtc_found="on the library path already"
else
  nvrtc_found=""
  while read -r d; do
    if ls "$d"/libnvrtc.so* >/dev/null 2>&1; then
      nvrtc_dir="$d" && break
    fi
  done < <(nvrtc_candidates | awk '!seen[$0]++')
  if [[ -n "$nvrtc_dir" ]]; then
    export LD_LIBRARY_PATH="$nvrtc_dir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    nvrtc_found="in $nvrtc_dir"
  fi
fi

# NVRTC's and the driver's versions, through their own libraries' version calls.
versions() {
  [[ -n "$python" ]] || { echo "NVRTC: (no Python to ask it)"; return; }
  "$python" - <<'EOF'
import ctypes
def load(names):
    for n in names:
        try:
            return n, ctypes.CDLL(n)
        except OSError:
            pass
    return None, None
name, lib = load(("libnvrtc.so.13", "libnvrtc.so.12", "libnvrtc.so"))
if lib:
    major, minor = ctypes.c_int(), ctypes.c_int()
    lib.nvrtcVersion(ctypes.byref(major), ctypes.byref(minor))
    print(f"NVRTC: {major.value}.{minor.value} ({name})")
else:
    print("NVRTC: not found")
name, lib = load(("libcuda.so.1", "libcuda.so"))
if lib:
    version = ctypes.c_int()
    lib.cuDriverGetVersion(ctypes.byref(version))
    print(f"CUDA driver: {version.value // 1000}.{version.value % 1000 // 10} (API version {version.value})")
else:
    print("CUDA driver: not found (no libcuda)")
EOF
}

if [[ -n "$nvrtc_found" ]]; then
  echo "NVRTC found $nvrtc_found"
  # With NVRTC there, a test that cannot load it is a failure, not a skip.
  export EARTHMOVER_REQUIRE_NVRTC=1
else
  echo "NVRTC not found: not on the library path, nor in the CUDA toolkit, nor in Python's nvidia packages (EARTHMOVER_NVRTC_DIR names a folder)"
fi
versions | tee "$logs/versions.txt"
have_gpu=0
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  have_gpu=1
  nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv,noheader | tee "$logs/gpu.txt"
else
  echo "GPU: none (nvidia-smi finds no GPU): the GPU stages will skip" | tee "$logs/gpu.txt"
fi
echo

# ------------------------------------------------------------------ stages

rows=()
failed=0

# stage NAME TIMEOUT_S COMMAND...: run it with its log in LOGDIR/NAME.log, add a summary row.
stage() {
  local name="$1" limit="$2"
  shift 2
  local left=$((budget - (SECONDS - start_all)))
  if ((left < 10)); then
    rows+=("$name|skip|0|out of time (BUNDLE_BUDGET_S=$budget)")
    return
  fi
  ((limit > left)) && limit=$left
  local log="$logs/$name.log" t0=$SECONDS rc result note
  printf '%-24s ' "$name"
  (cd "$here" && timeout -k 10 "$limit" "$@") >"$log" 2>&1
  rc=$?
  local took=$((SECONDS - t0))
  # A skip is said at the start of a line, or right after the harness's "test NAME ... " (the
  # kernels crate's tests, run with --nocapture, say it per test).
  note="$(grep -m1 -oE '(^|\.\.\. )skipped: .*' "$log" | sed 's/^\.\.\. //' | cut -c1-100)"
  if ((rc == 124 || rc == 137)); then
    result=FAIL note="timed out after ${limit}s"
  elif ((rc != 0)); then
    result=FAIL
    # A panic's message is on the line after "panicked at".
    note="$(awk '/panicked at/ { getline; print; exit }' "$log")"
    [[ -n "$note" ]] || note="$(grep -m1 -E 'error|Error|FAILED' "$log")"
    note="exit $rc: $(cut -c1-90 <<<"$note")"
  elif [[ -n "$note" ]]; then
    result=skip
  else
    result=pass
    # Which devices the checks ran on (the bundle has no emulator: not worth a word).
    note="$(grep -m1 -E 'checks run on|largest gap|^NVRTC' "$log" |
      sed -E 's/cuda-emulator \(not built in: --features emulator\)(, )?//; s/; skipped: $//' | cut -c1-100)"
  fi
  [[ $result == FAIL ]] && failed=1
  echo "$result (${took}s)"
  rows+=("$name|$result|$took|$note")
}

# torch_stage NAME TIMEOUT_S SCRIPT ARGS...: a PyTorch reference script, when it can run.
torch_stage() {
  local name="$1"
  if ((have_gpu == 0)); then
    rows+=("$name|skip|0|no GPU")
  elif [[ -z "$python" ]] || ! "$python" -c 'import torch' >/dev/null 2>&1; then
    rows+=("$name|skip|0|PyTorch does not import")
  else
    local limit="$2" script="$3"
    shift 3
    stage "$name" "$limit" "$python" "reference/$script" "$@"
  fi
}

export RUST_BACKTRACE=1
# What a first GPU run must show, first: the kernels compile, the GPU agrees with the CPU.
# Every source compiled for sm_80 and sm_90: CI's rehearsal on a loaded 2-core machine has
# taken past 60 s.
stage nvrtc 150 "$bin/nvrtc" --nocapture
stage gpu_parity 60 "$bin/gpu_parity" --nocapture
stage gpu_training 90 "$bin/gpu_training" --nocapture
# Each kernel against its CPU twin on GPU 0, the tensor cores' fragment layout lane by lane first.
for t in tensor_cores conv_tensor_cores cuda_kernels conv_kernels fused_kernels half_kernels device_counters device_failure; do
  stage "$t" 60 "$bin/$t" --nocapture --test-threads=1
done
# The figures: our kernels and step, then PyTorch's on the same GPU.
stage bench_gpu_kernels 60 "$bin/gpu_kernels"
stage bench_train_step 60 "$bin/train_step" cuda 64
stage bench_train_step_graph 60 "$bin/train_step" cuda 64 graph
torch_stage torch_gpu_kernels 60 gpu_kernels.py
torch_stage torch_train_step 60 train_step.py --cuda 64
# Every finite-difference check, first and second order, on the CPU and on GPU 0.
for t in grad_checker grad_elementwise grad_reduce grad_layout grad_matmul grad_conv grad_norm grad_loss grad_composition; do
  stage "$t" 60 "$bin/$t"
done

# ------------------------------------------------------------------ summary

{
  echo "== summary ($((SECONDS - start_all)) s in all; logs in $logs)"
  printf '%-24s %-6s %5s  %s\n' stage result s note
  for row in "${rows[@]}"; do
    IFS='|' read -r name result took note <<<"$row"
    printf '%-24s %-6s %5s  %s\n' "$name" "$result" "$took" "$note"
  done
} | tee "$logs/summary.txt"
for f in gpu-kernels:bench_gpu_kernels torch-gpu-kernels:torch_gpu_kernels train-step:bench_train_step train-step-graph:bench_train_step_graph torch-train-step:torch_train_step; do
  log="$logs/${f#*:}.log"
  if [[ -s "$log" ]] && ! grep -q '^skipped' "$log"; then
    echo
    echo "-- ${f%%:*}"
    cat "$log"
  fi
done
exit $failed
