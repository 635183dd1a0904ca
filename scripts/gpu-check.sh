#!/usr/bin/env bash
# Everything that needs a GPU, in one command, for the time we get on a GPU machine:
# builds, runs the GPU tests (against the CPU), the GPU benchmarks and PyTorch's on the same
# GPU, and prints a summary. Logs go to runs/gpu-check/.
#
#   scripts/gpu-check.sh            (needs CUDA 13's driver; NVRTC from the toolkit or PyPI)
set -uo pipefail
cd "$(dirname "$0")/.."
out=runs/gpu-check
mkdir -p "$out"
if ! python3 -c 'import ctypes; ctypes.CDLL("libnvrtc.so.13")' 2>/dev/null; then
  python3 -m pip install --quiet "nvidia-cuda-nvrtc>=13,<14" 2>/dev/null || true
  lib=$(python3 -c 'import nvidia, os; print(os.path.join(list(nvidia.__path__)[0], "cu13", "lib"))' 2>/dev/null)
  [[ -n "$lib" ]] && export LD_LIBRARY_PATH="$lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
fi
export EARTHMOVER_REQUIRE_NVRTC=1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$out/gpu.txt"

status() { if [[ $1 -eq 0 ]]; then echo pass; else echo FAIL; fi; }
cargo build --release --all-targets 2>&1 | tail -1
cargo test --release -p earthmover-kernels --test nvrtc > "$out/nvrtc.log" 2>&1; nvrtc=$?
cargo test --release --test gpu_parity --test gpu_training -- --nocapture > "$out/gpu-tests.log" 2>&1; tests=$?
# Every finite-difference check, first and second order, on the CPU and on the GPU.
cargo test --release --test grad_checker --test grad_elementwise --test grad_reduce --test grad_layout --test grad_matmul \
  --test grad_conv --test grad_norm --test grad_loss --test grad_composition > "$out/grad-tests.log" 2>&1; grad=$?
cargo bench --bench gpu_kernels > "$out/gpu-kernels.txt" 2>&1
cargo bench --bench train_step -- cuda 64 > "$out/train-step.txt" 2>&1
python3 benches/reference/gpu_kernels.py > "$out/torch-gpu-kernels.txt" 2>&1
python3 benches/reference/train_step.py --cuda 64 > "$out/torch-train-step.txt" 2>&1

echo
echo "== summary"
echo "NVRTC compiles every kernel:            $(status $nvrtc)"
echo "GPU parity and training tests:          $(status $tests)"
echo "Finite-difference checks on the GPU:     $(status $grad)"
grep -h "largest gap" "$out/gpu-tests.log" || true
grep -m1 -h "finite-difference checks run on" "$out/grad-tests.log" || true
echo
echo "-- earthmover kernels";            cat "$out/gpu-kernels.txt"
echo "-- PyTorch (cuBLAS/cuDNN)";        cat "$out/torch-gpu-kernels.txt"
echo "-- WGAN-GP / WGAN step, earthmover"; cat "$out/train-step.txt"
echo "-- WGAN-GP / WGAN step, PyTorch";    cat "$out/torch-train-step.txt"
