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
# Time is measured apart from the long runs. A run's quality at an iteration is the same however
# busy the machine is (training is deterministic), its logged seconds are not; so each setting is
# first timed alone for 60 iterations (its pace, in runs/sweep/pace/NAME: keep the machine quiet
# for that minute), then trained for the iterations that pace fits in the budget, and the table
# and plot put each measurement at iteration x pace. The long runs may share the machine.
#
# Runs go to runs/sweep/NAME (a finished run is kept and not trained again: delete its folder
# to redo it); the table to runs/sweep/table.md, the plot to docs/images/frontier.png.
set -euo pipefail
cd "$(dirname "$0")/.."
budget=${BUDGET:-900}
runs=runs/sweep
mkdir -p "$runs"
cargo build --release -p wgan-mnist -p gan-experiments
bin=target/release

# name | flags beyond the common ones, which start from the paper's settings (`--paper`: lr 1e-4,
# betas 0,0.9, n_critic 5, no average) whatever wgan-mnist's defaults are today.
settings=(
  "paper|"
  "ema|--ema 0.999"
  "ema0.99|--ema 0.99"
  "betas0.5|--ema 0.999 --betas 0.5,0.9"
  "lr2e-4|--ema 0.999 --lr 2e-4"
  "lr2e-4-betas0.5|--ema 0.999 --lr 2e-4 --betas 0.5,0.9"
  "ttur|--ema 0.999 --lr-critic 3e-4 --lr-gen 1e-4"
  "ncritic3|--ema 0.999 --n-critic 3"
  "lr2e-4-betas0.5-ncritic3|--ema 0.999 --lr 2e-4 --betas 0.5,0.9 --n-critic 3"
  "lr2e-4-betas0.5-ncritic2|--ema 0.999 --lr 2e-4 --betas 0.5,0.9 --n-critic 2"
  "lr2e-4-betas0.5-ncritic1|--ema 0.999 --lr 2e-4 --betas 0.5,0.9 --n-critic 1"
  "lr2e-4-betas0.5-ncritic3-dim64|--ema 0.999 --lr 2e-4 --betas 0.5,0.9 --n-critic 3 --dim 64"
  "batch32|--ema 0.999 --batch-size 32"
  "dim16|--ema 0.999 --dim 16"
  "dim64|--ema 0.999 --dim 64"
)
common=(--algo wgan-gp --paper --eval-every 250 --eval-samples 10000 --sample-every 250 --checkpoint-every 1000000 --quiet)

wanted=("$@")
chosen=()
dirs=()
for entry in "${settings[@]}"; do
  name=${entry%%|*}
  dirs+=("$runs/$name")
  if [[ ${#wanted[@]} -gt 0 && ! " ${wanted[*]} " =~ " $name " ]]; then
    continue
  fi
  chosen+=("$entry")
done

# First every chosen setting's pace: seconds per iteration between iterations 10 and 60.
for entry in "${chosen[@]}"; do
  name=${entry%%|*}
  read -r -a flags <<< "${entry#*|}"
  [[ -f $runs/pace/$name ]] && continue
  echo "== $name: timing 60 iterations"
  rm -rf "${runs:?}/timing"
  "$bin/wgan-mnist" --algo wgan-gp --paper "${flags[@]}" --iters 60 --eval-every 0 --sample-every 1000000 \
    --checkpoint-every 1000000 --quiet --out "$runs/timing"
  mkdir -p "$runs/pace"
  awk -F, '$1 == 10 { t0 = $2 } $1 == 60 { printf "%.4f\n", ($2 - t0) / 50 }' \
    "$runs/timing/metrics.csv" > "$runs/pace/$name"
  rm -rf "${runs:?}/timing"
  echo "   $(cat "$runs/pace/$name") s per iteration"
done

# Then the long runs, each for the iterations its pace fits in the budget and 5% more.
for entry in "${chosen[@]}"; do
  name=${entry%%|*}
  read -r -a flags <<< "${entry#*|}"
  if [[ -f $runs/$name/finished ]]; then
    echo "== $name: kept (delete $runs/$name to train it again)"
    continue
  fi
  pace=$(cat "$runs/pace/$name")
  iters=$(awk -v b="$budget" -v p="$pace" 'BEGIN { printf "%d", b * 1.05 / p + 1 }')
  described=${flags[*]:-"the paper's settings"}
  echo "== $name: $described ($iters iterations at $pace s)"
  rm -rf "${runs:?}/$name"
  "$bin/wgan-mnist" "${common[@]}" "${flags[@]}" --iters "$iters" --out "$runs/$name"
  cp "$runs/pace/$name" "$runs/$name/pace"
  touch "$runs/$name/finished"
done

existing=()
for dir in "${dirs[@]}"; do [[ -f $dir/finished ]] && existing+=("$dir"); done
"$bin/gan-experiments" frontier --budget "$budget" --out docs/images "${existing[@]}" | tee "$runs/table.md"
