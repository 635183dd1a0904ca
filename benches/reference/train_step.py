"""PyTorch's time for the same training steps as `cargo bench --bench train_step`: the WGAN-GP
paper's MNIST networks (width DIM), batch 64, one generator iteration = 5 critic steps
(WGAN-GP: with the gradient penalty; WGAN: with weight clipping) and one generator step.

    python benches/reference/train_step.py 32 64
    python benches/reference/train_step.py --cuda 64     # on GPU 0, TF32 off (FP32 as ours)
    python benches/reference/train_step.py 64 wgan bf16  # one algorithm, under autocast

Needs torch. Prints seconds per iteration (median and min of 5, after one warm-up), as the
Rust bench does, so that the two can be run one after the other on the same machine; and, as it
does, the FLOPs of one iteration (counted with torch.utils.flop_counter's formulas in one extra iteration,
outside the timing), the effective GFLOP/s, the peak resident memory of each configuration (the
high-water mark is reset between them) and the resident memory once torch is imported, which
every peak includes.
"""
import os
import statistics
import sys
import time

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry

from networks import LATENT, Critic, Generator

BATCH = 64
DEVICE = "cuda" if "--cuda" in sys.argv else "cpu"
# `bf16`: the networks' forward passes under torch.autocast in bfloat16 (mixed precision: f32
# weights, optimisers and losses), as earthmover's `train_step -- bf16` and `--precision bf16`.
BF16 = "bf16" in sys.argv[1:]
# The algorithms named on the command line (`wgan-gp`, `wgan`), both when none is: as
# earthmover's `train_step` takes them.
ALGOS = [a for a in ["wgan-gp", "wgan"] if a in sys.argv[1:]] or ["wgan-gp", "wgan"]


def run(module, x):
    """module(x), under autocast with `bf16`, returned in f32 (the losses are reduced in f32)."""
    with torch.autocast(DEVICE, dtype=torch.bfloat16, enabled=BF16):
        return module(x).float()


def sync():
    if DEVICE == "cuda":
        torch.cuda.synchronize()


def iteration(algo, g, c, opt_g, opt_c, real):
    for _ in range(5):
        fake = run(g, torch.randn(BATCH, LATENT, device=DEVICE)).detach()
        loss = run(c, fake).mean() - run(c, real).mean()
        if algo == "wgan-gp":
            eps = torch.rand(BATCH, 1, 1, 1, device=DEVICE)
            x_hat = (eps * real + (1 - eps) * fake).requires_grad_(True)
            grads = torch.autograd.grad(run(c, x_hat).sum(), x_hat, create_graph=True)[0]
            loss = loss + 10 * ((grads.flatten(1).norm(dim=1) - 1) ** 2).mean()
        opt_c.zero_grad()
        loss.backward()
        opt_c.step()
        if algo == "wgan":
            with torch.no_grad():
                for p in c.parameters():
                    p.clamp_(-0.01, 0.01)
    for p in c.parameters():
        p.requires_grad_(False)
    loss_g = -run(c, run(g, torch.randn(BATCH, LATENT, device=DEVICE))).mean()
    opt_g.zero_grad()
    loss_g.backward()
    opt_g.step()
    for p in c.parameters():
        p.requires_grad_(True)


class CountFlops(TorchDispatchMode):
    """Adds up the FLOPs of every op that torch.utils.flop_counter has a formula for (matmuls
    and convolutions, forward and backward). FlopCounterMode itself cannot follow
    autograd.grad on a leaf, which the gradient penalty needs."""

    def __init__(self):
        super().__init__()
        self.flops = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        formula = flop_registry.get(func._overloadpacket)
        if formula is not None:
            self.flops += formula(*args, **kwargs, out_val=out)
        return out


def resident_mb(field):
    """A field of /proc/self/status in MB (VmRSS: resident now, VmHWM: the high-water mark)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def reset_peak_resident():
    """Start a new high-water mark of resident memory (Linux: clear_refs value 5)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def main(dims):
    torch.manual_seed(0)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    # As earthmover's bench does (EARTHMOVER_FLUSH_DENORMAL=0 keeps them there, and here).
    flush = os.environ.get("EARTHMOVER_FLUSH_DENORMAL", "1").strip().lower() not in ("0", "off", "false", "no")
    flushed = torch.set_flush_denormal(flush) and flush
    print(f"denormals: {'flushed' if flushed else 'kept'}")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {DEVICE}, precision {'bf16' if BF16 else 'f32'}")
    rss = resident_mb("VmRSS:")
    if rss is not None:
        print(f"resident before training (interpreter and torch): {rss:.0f} MB")
    print(
        f"{'algo':<8} {'dim':>4} {'batch':>6} {'s/iteration':>12} {'min s/iter':>11} "
        f"{'GFLOP/iter':>12} {'GFLOP/s':>9} {'peak MB':>9}"
    )
    for dim in dims:
        for algo in ALGOS:
            reset_peak_resident()
            g, c = Generator(dim).to(DEVICE), Critic(dim).to(DEVICE)
            if algo == "wgan-gp":
                opt_g = torch.optim.Adam(g.parameters(), 1e-4, betas=(0.0, 0.9))
                opt_c = torch.optim.Adam(c.parameters(), 1e-4, betas=(0.0, 0.9))
            else:
                opt_g = torch.optim.RMSprop(g.parameters(), 5e-5)
                opt_c = torch.optim.RMSprop(c.parameters(), 5e-5)
            real = torch.rand(BATCH, 1, 28, 28, device=DEVICE)
            iteration(algo, g, c, opt_g, opt_c, real)
            sync()
            times = []
            for _ in range(5):
                start = time.perf_counter()
                iteration(algo, g, c, opt_g, opt_c, real)
                sync()
                times.append(time.perf_counter() - start)
            median = statistics.median(times)
            peak = resident_mb("VmHWM:")
            counter = CountFlops()
            with counter:
                iteration(algo, g, c, opt_g, opt_c, real)
            gflop = counter.flops / 1e9
            peak = "-" if peak is None else f"{peak:.0f}"
            print(
                f"{algo:<8} {dim:>4} {BATCH:>6} {median:>12.3f} {min(times):>11.3f} "
                f"{gflop:>12.1f} {gflop / median:>9.1f} {peak:>9}"
            )


if __name__ == "__main__":
    main([int(a) for a in sys.argv[1:] if a.isdigit()] or [32, 64])
