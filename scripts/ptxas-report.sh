#!/usr/bin/env bash
# A static report per CUDA kernel for sm_90: registers, shared memory, spills, as `ptxas -v`
# prints them, for the PTX our NVRTC path makes (crates/kernels/tests/nvrtc.rs writes it when
# EARTHMOVER_PTX_DIR is set). Prints a Markdown table (docs/kernels.md, "Static report").
#
#   scripts/ptxas-report.sh [kernels/*.cu files' names ...]   # default: every file
#
# Needs libnvrtc on LD_LIBRARY_PATH (pip install nvidia-cuda-nvrtc) and ptxas: $PTXAS, else
# the one on PATH, else /tmp/ptxas-venv's (python3 -m venv /tmp/ptxas-venv &&
# /tmp/ptxas-venv/bin/pip install nvidia-cuda-nvcc). ptxas must be at least as new as the
# NVRTC that wrote the PTX.
set -euo pipefail
cd "$(dirname "$0")/.."

ptxas="${PTXAS:-$(command -v ptxas || ls /tmp/ptxas-venv/lib/python3*/site-packages/nvidia/cu*/bin/ptxas 2>/dev/null | head -1)}"
[ -x "$ptxas" ] || { echo "no ptxas: set PTXAS or pip install nvidia-cuda-nvcc (see the header)" >&2; exit 1; }

ptx_dir="$(mktemp -d)"
trap 'rm -rf "$ptx_dir"' EXIT
EARTHMOVER_REQUIRE_NVRTC=1 EARTHMOVER_PTX_DIR="$ptx_dir" nice -n 19 cargo test -q -p earthmover-kernels \
    --test nvrtc every_kernel_source_compiles_for_sm80_and_sm90 >&2

files=("$@")
[ ${#files[@]} -gt 0 ] || files=($(cd kernels && ls *.cu))

echo "ptxas: $("$ptxas" --version | tail -1)"
echo
echo "| file | kernel | registers | shared memory (bytes) | stack frame (bytes) | spill stores / loads (bytes) |"
echo "| --- | --- | ---: | ---: | ---: | --- |"
for file in "${files[@]}"; do
    # ptxas -v prints, per kernel: "Compiling entry function 'NAME' for 'sm_90'", then
    # "N bytes stack frame, N bytes spill stores, N bytes spill loads", then
    # "Used N registers, ... N bytes smem, ...".
    nice -n 19 "$ptxas" -v -arch=sm_90 -o /dev/null "$ptx_dir/$file.sm_90.ptx" 2>&1 | awk -v file="$file" '
        /Compiling entry function/ { match($0, /'\''[^'\'']+'\''/); kernel = substr($0, RSTART + 1, RLENGTH - 2); smem = 0 }
        /bytes stack frame/ { stack = $1; spill_stores = $5; spill_loads = $9 }
        /Used [0-9]+ registers/ {
            registers = $0; sub(/.*Used /, "", registers); sub(/ registers.*/, "", registers)
            if (match($0, /[0-9]+ bytes smem/)) { smem = substr($0, RSTART, RLENGTH); sub(/ bytes smem/, "", smem) }
            printf "| `%s` | `%s` | %s | %s | %s | %s / %s |\n", file, kernel, registers, smem, stack, spill_stores, spill_loads
        }'
done
