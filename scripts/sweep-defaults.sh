#!/usr/bin/env bash
# The sweep behind wgan-mnist's defaults: quality (classifier score, Frechet distance, confident
# share, KL from uniform, on the project's own classifier) against training time for candidate
# settings of WGAN-GP on the built-in digits. Each setting trains once for a little more than the
# budget, measured every 250 iterations, so one run traces its whole quality-time curve; the
# table gives each setting at its best point within the budget (15 minutes of training by
# default) and `frontier.png` the curves with their lower envelope.
#
#   scripts/sweep-defaults.sh                 every setting (about 3 hours on a 2-core CPU)
#   scripts/sweep-defaults.sh ema lr2e-4      only those settings (names below)
#   BUDGET=600 scripts/sweep-defaults.sh      another budget, in seconds
#
# Runs go to runs/sweep/NAME (a finished run is kept and not trained again: delete its folder
# to redo it); the table to runs/sweep/table.md, the plot to docs/images/frontier.png. Run it on
# a quiet machine: the budget is wall time, so anything else running moves the frontier.
set -euo pipefail
cd "$(dirname "$0")/.."
budget=${BUDGET:-900}
runs=runs/sweep
mkdir -p "$runs"
cargo build --release -p wgan-mnist -p gan-experiments
bin=target/release

# name | flags beyond the common ones. Iterations are set per width to outlast the budget.
settings=(
  "paper|"
  "ema|--ema 0.999"
  "ema0.99|--ema 0.99"
  "betas0.5|--ema 0.999 --betas 0.5,0.9"
  "lr2e-4|--ema 0.999 --lr 2e-4"
  "lr2e-4-betas0.5|--ema 0.999 --lr 2e-4 --betas 0.5,0.9"
  "ttur|--ema 0.999 --lr-critic 3e-4 --lr-gen 1e-4"
  "ncritic3|--ema 0.999 --n-critic 3"
  "batch32|--ema 0.999 --batch-size 32"
  "dim16|--ema 0.999 --dim 16"
  "dim64|--ema 0.999 --dim 64"
)
common=(--algo wgan-gp --eval-every 250 --eval-samples 10000 --sample-every 250 --checkpoint-every 1000000 --quiet)

wanted=("$@")
dirs=()
for entry in "${settings[@]}"; do
  name=${entry%%|*}
  read -r -a flags <<< "${entry#*|}"
  dirs+=("$runs/$name")
  if [[ ${#wanted[@]} -gt 0 && ! " ${wanted[*]} " =~ " $name " ]]; then
    continue
  fi
  if [[ -f $runs/$name/finished ]]; then
    echo "== $name: kept (delete $runs/$name to train it again)"
    continue
  fi
  # Enough iterations to pass the budget at each width's speed on a 2-core CPU (about 0.25 s
  # per iteration at DIM 32, 0.1 s at 16, 0.7 s at 64), with room for a faster machine.
  iters=$((budget * 6))
  [[ " ${flags[*]} " =~ " --dim 64 " ]] && iters=$((budget * 2))
  [[ " ${flags[*]} " =~ " --dim 16 " ]] && iters=$((budget * 15))
  echo "== $name: ${flags[*]:-the paper's settings} (up to $iters iterations)"
  rm -rf "${runs:?}/$name"
  "$bin/wgan-mnist" "${common[@]}" "${flags[@]}" --iters "$iters" --out "$runs/$name" \
    --max-seconds "$((budget + budget / 10))"
  touch "$runs/$name/finished"
done

existing=()
for dir in "${dirs[@]}"; do [[ -f $dir/finished ]] && existing+=("$dir"); done
"$bin/gan-experiments" frontier --budget "$budget" --out docs/images "${existing[@]}" | tee "$runs/table.md"
