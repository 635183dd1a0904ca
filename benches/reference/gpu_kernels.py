"""PyTorch's (cuBLAS, cuDNN) time for the shapes of `cargo bench --bench gpu_kernels`, on GPU 0,
TF32 off so that both sides compute in FP32 (the convolutions also in bf16, as ours):

    python benches/reference/gpu_kernels.py
"""
import statistics
import time

import torch
import torch.nn.functional as F

torch.backends.cuda.matmul.allow_tf32 = False
torch.backends.cudnn.allow_tf32 = False


def timed(f, runs=50):
    f()
    f()
    torch.cuda.synchronize()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        f()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main():
    dev = "cuda"
    print(f"torch {torch.__version__}, {torch.cuda.get_device_name(0)}")
    print("\nmatmul, f32, C = A B, n x n x n (cuBLAS)")
    print(f"{'n':>6} {'ms':>12} {'GFLOP/s':>10}")
    for n in [128, 256, 512, 1024, 2048, 4096]:
        a, b = torch.randn(n, n, device=dev), torch.randn(n, n, device=dev)
        s = timed(lambda: a @ b, 10 if n >= 2048 else 50)
        print(f"{n:>6} {s * 1e3:>12.3f} {2 * n ** 3 / s / 1e9:>10.0f}")

    for dtype in [torch.float32, torch.bfloat16]:
        label = "f32" if dtype == torch.float32 else "bf16 (tensor cores)"
        print(f"\nthe reference critic's convolutions (DIM 64, batch 64, 5x5, stride 2, padding 2), {label} (cuDNN)")
        print(f"{'layer':<28} {'forward ms':>10} {'input grad ms':>12} {'weight grad ms':>12}")
        for name, c, o, hw in [("conv1 1->64, 28->14", 1, 64, 28), ("conv2 64->128, 14->7", 64, 128, 14),
                               ("conv3 128->256, 7->4", 128, 256, 7)]:
            x = torch.randn(64, c, hw, hw, device=dev, dtype=dtype)
            w = torch.randn(o, c, 5, 5, device=dev, dtype=dtype)
            y = F.conv2d(x, w, stride=2, padding=2)
            gy = torch.randn_like(y)
            fwd = timed(lambda: F.conv2d(x, w, stride=2, padding=2))
            inp = timed(lambda: torch.nn.grad.conv2d_input(x.shape, w, gy, stride=2, padding=2))
            wgt = timed(lambda: torch.nn.grad.conv2d_weight(x, w.shape, gy, stride=2, padding=2))
            print(f"{name:<28} {fwd * 1e3:>10.3f} {inp * 1e3:>12.3f} {wgt * 1e3:>12.3f}")

    n = 4_300_000
    p = torch.zeros(n, device=dev, requires_grad=True)
    p.grad = torch.randn(n, device=dev)
    opt = torch.optim.Adam([p], 1e-4, betas=(0.0, 0.9), fused=True)
    s = timed(opt.step)
    print(f"\nAdam (fused) over {n} f32 parameters: {s * 1e3:.3f} ms, {7 * 4 * n / s / 1e9:.0f} GB/s")


if __name__ == "__main__":
    main()
