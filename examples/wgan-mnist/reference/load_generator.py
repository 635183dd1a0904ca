"""Load a generator trained by `wgan-mnist` into PyTorch and draw digits with it.

    python load_generator.py runs/wgan-mnist/generator.safetensors samples-torch.png

The networks below are the PyTorch twins of earthmover's (crates/wgan/src/models.rs): the same
attribute names and weight layouts, so `load_state_dict(strict=True)` takes the file as is.
Needs torch, safetensors and numpy (and pillow for the PNG).
"""
import json
import sys

import torch
from safetensors import safe_open
from safetensors.torch import load_file
from torch import nn

LATENT = 128


class DcganGenerator(nn.Module):
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


class MlpGenerator(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.bn1 = nn.Linear(LATENT, 128), nn.BatchNorm1d(128)
        self.fc2, self.bn2 = nn.Linear(128, 256), nn.BatchNorm1d(256)
        self.fc3 = nn.Linear(256, 784)

    def forward(self, z):
        x = torch.relu(self.bn1(self.fc1(z)))
        x = torch.relu(self.bn2(self.fc2(x)))
        return torch.tanh(self.fc3(x)).view(-1, 1, 28, 28)


def main(path, out):
    with safe_open(path, "pt") as f:
        config = json.loads(f.metadata()["config"])
    model = DcganGenerator(config["dim"]) if config["model"] == "dcgan" else MlpGenerator()
    model.load_state_dict(load_file(path), strict=True)
    model.eval()
    with torch.no_grad():
        images = model(torch.randn(64, LATENT, generator=torch.Generator().manual_seed(0)))
    lo, hi = (0.0, 1.0) if config["model"] == "dcgan" else (-1.0, 1.0)
    pixels = ((images.clamp(lo, hi) - lo) / (hi - lo) * 255).round().byte()[:, 0]
    grid = pixels.view(8, 8, 28, 28).permute(0, 2, 1, 3).reshape(8 * 28, 8 * 28).numpy()
    from PIL import Image

    Image.fromarray(grid, mode="L").save(out)
    print(f"loaded {path} ({config['model']}, dim {config['dim']}) strictly; wrote {out}")


if __name__ == "__main__":
    main(*sys.argv[1:3])
