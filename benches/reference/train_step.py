"""PyTorch's time for the same training steps as `cargo bench --bench train_step`: the WGAN-GP
paper's MNIST networks (width DIM), batch 64, one generator iteration = 5 critic steps
(WGAN-GP: with the gradient penalty; WGAN: with weight clipping) and one generator step.

    python benches/reference/train_step.py 32 64

Needs torch. Prints seconds per iteration (median and min of 5, after one warm-up), as the
Rust bench does, so that the two can be run one after the other on the same machine.
"""
import statistics
import sys
import time

import torch
from torch import nn

LATENT, BATCH = 128, 64


class Generator(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.dim = dim
        self.fc = nn.Linear(LATENT, 4 * 4 * 4 * dim)
        up = dict(kernel_size=5, stride=2, padding=2, output_padding=1)
        self.deconv1 = nn.ConvTranspose2d(4 * dim, 2 * dim, **up)
        self.deconv2 = nn.ConvTranspose2d(2 * dim, dim, **up)
        self.deconv3 = nn.ConvTranspose2d(dim, 1, **up)

    def forward(self, z):
        x = torch.relu(self.fc(z)).view(-1, 4 * self.dim, 4, 4)
        x = torch.relu(self.deconv1(x))[:, :, :7, :7]
        x = torch.relu(self.deconv2(x))
        return torch.sigmoid(self.deconv3(x))


class Critic(nn.Module):
    def __init__(self, dim):
        super().__init__()
        down = dict(kernel_size=5, stride=2, padding=2)
        self.conv1 = nn.Conv2d(1, dim, **down)
        self.conv2 = nn.Conv2d(dim, 2 * dim, **down)
        self.conv3 = nn.Conv2d(2 * dim, 4 * dim, **down)
        self.fc = nn.Linear(4 * 4 * 4 * dim, 1)

    def forward(self, x):
        x = nn.functional.leaky_relu(self.conv1(x), 0.2)
        x = nn.functional.leaky_relu(self.conv2(x), 0.2)
        x = nn.functional.leaky_relu(self.conv3(x), 0.2)
        return self.fc(x.flatten(1))


def iteration(algo, g, c, opt_g, opt_c, real):
    for _ in range(5):
        fake = g(torch.randn(BATCH, LATENT)).detach()
        loss = c(fake).mean() - c(real).mean()
        if algo == "wgan-gp":
            eps = torch.rand(BATCH, 1, 1, 1)
            x_hat = (eps * real + (1 - eps) * fake).requires_grad_(True)
            grads = torch.autograd.grad(c(x_hat).sum(), x_hat, create_graph=True)[0]
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
    loss_g = -c(g(torch.randn(BATCH, LATENT))).mean()
    opt_g.zero_grad()
    loss_g.backward()
    opt_g.step()
    for p in c.parameters():
        p.requires_grad_(True)


def main(dims):
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"{'algo':<8} {'dim':>4} {'batch':>6} {'s/iteration':>14} {'min s/iter':>14}")
    for dim in dims:
        for algo in ["wgan-gp", "wgan"]:
            g, c = Generator(dim), Critic(dim)
            if algo == "wgan-gp":
                opt_g = torch.optim.Adam(g.parameters(), 1e-4, betas=(0.0, 0.9))
                opt_c = torch.optim.Adam(c.parameters(), 1e-4, betas=(0.0, 0.9))
            else:
                opt_g = torch.optim.RMSprop(g.parameters(), 5e-5)
                opt_c = torch.optim.RMSprop(c.parameters(), 5e-5)
            real = torch.rand(BATCH, 1, 28, 28)
            iteration(algo, g, c, opt_g, opt_c, real)
            times = []
            for _ in range(5):
                start = time.perf_counter()
                iteration(algo, g, c, opt_g, opt_c, real)
                times.append(time.perf_counter() - start)
            print(f"{algo:<8} {dim:>4} {BATCH:>6} {statistics.median(times):>14.3f} {min(times):>14.3f}")


if __name__ == "__main__":
    main([int(a) for a in sys.argv[1:]] or [32, 64])
