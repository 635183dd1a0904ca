"""Load a generator trained by `wgan-mnist` into PyTorch and draw digits with it.

    python benches/reference/load_generator.py runs/wgan-mnist/generator.safetensors samples-torch.png

The networks in networks.py are the PyTorch twins of earthmover's: the same attribute names
and weight layouts, so `load_state_dict(strict=True)` takes the file as is.
Needs torch, safetensors and numpy (and pillow for the PNG).
"""
import json
import sys

import torch
from safetensors import safe_open
from safetensors.torch import load_file

from networks import LATENT, Generator, MlpGenerator

def main(path, out):
    with safe_open(path, "pt") as f:
        config = json.loads(f.metadata()["config"])
    model = Generator(config["dim"]) if config["model"] == "dcgan" else MlpGenerator()
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
