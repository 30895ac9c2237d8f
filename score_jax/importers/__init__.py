"""Official weights -> Flax, without executing code from any file.

- `load_diffusers_unet(path)`: a diffusers DDPM folder (config.json + safetensors).
- NCSN / NCSNv2 `.pth` files: `score_jax.convert`.
"""

from score_jax.importers.diffusers_unet import load_diffusers_unet

__all__ = ["load_diffusers_unet"]
