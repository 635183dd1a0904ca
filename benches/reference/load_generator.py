"""Load a generator trained by `wgan-mnist` into PyTorch and draw digits with it.

    python benches/reference/load_generator.py runs/wgan-mnist/generator.safetensors samples-torch.png

It takes the files `wgan-mnist export --dtype bf16` (or f16) writes, too.

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
    state = load_file(path)
    # `wgan-mnist export --dtype bf16|f16` writes 16-bit weights: load_state_dict converts
    # them into the model's f32 parameters, exactly, as earthmover's `sample` does.
    dtypes = sorted({str(t.dtype).removeprefix("torch.") for t in state.values()})
    model = Generator(config["dim"]) if config["model"] == "dcgan" else MlpGenerator()
    model.load_state_dict(state, strict=True)
    model.eval()
    with torch.no_grad():
        images = model(torch.randn(64, LATENT, generator=torch.Generator().manual_seed(0)))
    lo, hi = (0.0, 1.0) if config["model"] == "dcgan" else (-1.0, 1.0)
    pixels = ((images.clamp(lo, hi) - lo) / (hi - lo) * 255).round().byte()[:, 0]
    grid = pixels.view(8, 8, 28, 28).permute(0, 2, 1, 3).reshape(8 * 28, 8 * 28).numpy()
    from PIL import Image

    Image.fromarray(grid, mode="L").save(out)
    print(f"loaded {path} ({config['model']}, dim {config['dim']}, weights in {', '.join(dtypes)}) strictly; wrote {out}")


if __name__ == "__main__":
    main(*sys.argv[1:3])
