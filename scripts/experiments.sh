#!/usr/bin/env bash
# Regenerate every figure and table of docs/experiments.md.
#
#   scripts/experiments.sh [mnist|lines|toy|all]   (default: all)
#
# Runs go to runs/experiments/ (kept between stages, so a stage can be re-plotted alone);
# figures go to docs/images/experiments/, tables to runs/experiments/*.md. Times on a 2-core
# CPU: mnist about 30 min, lines 2 min, toy about 45 min.
set -euo pipefail
cd "$(dirname "$0")/.."
stage=${1:-all}
runs=runs/experiments
figures=docs/images/experiments
mkdir -p "$runs" "$figures"
cargo build --release -p wgan-mnist -p gan-experiments
bin=target/release

if [[ $stage == mnist || $stage == all ]]; then
  # GAN, WGAN and WGAN-GP with the same DCGAN networks (DIM 32, batch 64), each with its
  # published optimiser settings; only the objective changes. Samples are scored every 50
  # iterations on 2,000 samples, and the critic's estimate is taken on test digits as often.
  # `--paper`: the papers' settings, whatever wgan-mnist's defaults are.
  for algo in gan wgan wgan-gp; do
    "$bin/wgan-mnist" --algo "$algo" --paper --overwrite --iters 1000 --eval-every 50 --eval-samples 2000 --test-every 50 \
      --sample-every 250 --checkpoint-every 1000 --quiet --out "$runs/mnist-$algo"
  done
  # The standard GAN once more with DCGAN's own remedy, batch-norm in the discriminator.
  "$bin/wgan-mnist" --algo gan --paper --overwrite --critic-norm batch --iters 1000 --eval-every 50 --eval-samples 2000 \
    --test-every 50 --sample-every 250 --checkpoint-every 1000 --quiet --out "$runs/mnist-gan-bn"
  "$bin/gan-experiments" compare --out "$figures" "$runs/mnist-gan" "$runs/mnist-wgan" "$runs/mnist-wgan-gp" \
    "$runs/mnist-gan-bn" | tee "$runs/mnist.md"
fi

if [[ $stage == lines || $stage == all ]]; then
  "$bin/gan-experiments" parallel-lines --out "$figures" | tee "$runs/parallel-lines.md"
fi

if [[ $stage == toy || $stage == all ]]; then
  for data in 8gaussians 25gaussians swissroll; do
    for algo in gan wgan wgan-gp; do
      "$bin/gan-experiments" toy --data "$data" --algo "$algo" --iters 2000 --out "$figures" --runs "$runs"
    done
  done
  "$bin/gan-experiments" toy-table --runs "$runs" | tee "$runs/toy.md"
fi
