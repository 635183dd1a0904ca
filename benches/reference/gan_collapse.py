"""Cross-check of the standard GAN's collapse in docs/experiments.md: PyTorch trains the same
DCGAN networks (DIM 32, no normalisation in the discriminator) with the same objective and
hyperparameters (non-saturating loss, Adam 2e-4, betas (0.5, 0.999), batch 64, one
discriminator step) on the same 9,000 digits, and prints the losses and the spread of the
samples across a batch. Run from the repository root:

    python benches/reference/gan_collapse.py
"""
import gzip
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(__file__))
from networks import LATENT, Critic, Generator  # noqa: E402

torch.manual_seed(0)
torch.set_num_threads(1)
raw = gzip.open("data/mnist/train-images-idx3-ubyte.gz").read()
images = torch.tensor(np.frombuffer(raw, np.uint8, offset=16).reshape(-1, 1, 28, 28) / 255.0, dtype=torch.float32)
generator, discriminator = Generator(32), Critic(32)
g_optim = torch.optim.Adam(generator.parameters(), 2e-4, betas=(0.5, 0.999))
d_optim = torch.optim.Adam(discriminator.parameters(), 2e-4, betas=(0.5, 0.999))
bce = torch.nn.functional.binary_cross_entropy_with_logits
print("iteration  discriminator_loss  generator_loss  per-pixel std of 256 samples")
for it in range(1, 301):
    real = images[torch.randint(0, len(images), (64,))]
    fake = generator(torch.randn(64, LATENT)).detach()
    r, f = discriminator(real), discriminator(fake)
    d_loss = bce(r, torch.ones_like(r)) + bce(f, torch.zeros_like(f))
    d_optim.zero_grad()
    d_loss.backward()
    d_optim.step()
    s = discriminator(generator(torch.randn(64, LATENT)))
    g_loss = bce(s, torch.ones_like(s))
    g_optim.zero_grad()
    g_loss.backward()
    g_optim.step()
    if it % 25 == 0:
        with torch.no_grad():
            spread = generator(torch.randn(256, LATENT)).std(0).mean().item()
        print(f"{it:9d}  {d_loss.item():18.4f}  {g_loss.item():14.3f}  {spread:.4f}", flush=True)
