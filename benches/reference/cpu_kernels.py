"""PyTorch's time for the shapes of `cargo bench --bench cpu_kernels`, on the CPU, printed as
the same table so that the two can be run one after the other on the same machine:

    python benches/reference/cpu_kernels.py

Every figure is the median of several runs after two warm-up calls. The input and weight
gradients are `torch.ops.aten.convolution_backward` asked for one of the two, as autograd does.
"""
import statistics
import time

import torch
import torch.nn.functional as F

BATCH, KERNEL = 64, 5

# (name, c, o, h, ho, output_padding, transposed): a conv [N, c, h, h] -> [N, o, ho, ho]; a
# generator layer is the transpose of such a conv, listed with its roles swapped.
CONVS = [
    ("critic conv1 1x28 -> 64x14", 1, 64, 28, 14, 1, False),
    ("critic conv2 64x14 -> 128x7", 64, 128, 14, 7, 1, False),
    ("critic conv3 128x7 -> 256x4", 128, 256, 7, 4, 0, False),
    ("gen deconv1 256x4 -> 128x8", 128, 256, 8, 4, 1, True),
    ("gen deconv2 128x7 -> 64x14", 64, 128, 14, 7, 1, True),
    ("gen deconv3 64x14 -> 1x28", 1, 64, 28, 14, 1, True),
]


def median_seconds(runs, f):
    f()
    f()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        f()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main():
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print("\nmatmul, f32, n x n x n")
    print(f"{'n':>6} {'ms':>10} {'GFLOP/s':>10}")
    for n in [128, 256, 512, 1024, 2048]:
        a, b = torch.randn(n, n), torch.randn(n, n)
        s = median_seconds(5 if n >= 1024 else 21, lambda: a @ b)
        print(f"{n:>6} {s * 1e3:>10.3f} {2 * n ** 3 / s / 1e9:>10.1f}")

    # The generator's linear layer at DIM 64 (128 noise values to 4 x 4 x 256 features, batch 64).
    print("\nthe generator's linear layer (batch 64, 128 -> 4096), f32")
    print(f"{'product':<30} {'ms':>10} {'GFLOP/s':>10}")
    x, w, gy = torch.randn(BATCH, 128), torch.randn(4096, 128), torch.randn(BATCH, 4096)
    for name, product in [
        ("forward x w^T (64x4096x128)", lambda: x @ w.t()),
        ("weight grad gy^T x (4096x128x64)", lambda: gy.t() @ x),
    ]:
        s = median_seconds(21, product)
        print(f"{name:<30} {s * 1e3:>10.3f} {2 * BATCH * 4096 * 128 / s / 1e9:>10.1f}")

    print("\nconvolutions of the reference networks (DIM 64, batch 64, 5x5, stride 2, padding 2), f32")
    print(f"{'layer':<30} {'forward ms':>11} {'input ms':>11} {'weight ms':>11} {'GFLOP/s':>9}")
    with torch.no_grad():
        for name, c, o, h, ho, output_padding, transposed in CONVS:
            x = torch.randn(BATCH, c, h, h)
            w = torch.randn(o, c, KERNEL, KERNEL)
            y = torch.randn(BATCH, o, ho, ho)

            def backward(grad_output, inp, weight, mask, op=0, is_transposed=False):
                return torch.ops.aten.convolution_backward(
                    grad_output, inp, weight, None, [2, 2], [2, 2], [1, 1], is_transposed, [op, op], 1, mask
                )

            runs = 11
            if not transposed:
                forward = median_seconds(runs, lambda: F.conv2d(x, w, None, 2, 2))
                inp = median_seconds(runs, lambda: backward(y, x, w, [True, False, False]))
                weight = median_seconds(runs, lambda: backward(y, x, w, [False, True, False]))
            else:
                # The transposed conv y -> x with weight w [o, c, k, k] ([in, out, k, k]).
                forward = median_seconds(
                    runs, lambda: F.conv_transpose2d(y, w, None, 2, 2, output_padding)
                )
                inp = median_seconds(runs, lambda: backward(x, y, w, [True, False, False], output_padding, True))
                weight = median_seconds(runs, lambda: backward(x, y, w, [False, True, False], output_padding, True))
            flops = 2 * BATCH * o * ho * ho * c * KERNEL * KERNEL
            gflops = 3 * flops / (forward + inp + weight) / 1e9
            print(f"{name:<30} {forward * 1e3:>11.3f} {inp * 1e3:>11.3f} {weight * 1e3:>11.3f} {gflops:>9.1f}")


if __name__ == "__main__":
    main()
