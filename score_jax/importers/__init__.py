"""Official weights -> Flax, without executing code from any file.

- `load_diffusers_unet(path)`: a diffusers DDPM folder (config.json + safetensors).
- `load_edm_pkl(path)`: an EDM network-snapshot-*.pkl (restricted unpickler, no torch).
- NCSN / NCSNv2 `.pth` files: `score_jax.convert`.
"""

from score_jax.importers.diffusers_unet import load_diffusers_unet
from score_jax.importers.edm_pkl import load_edm_pkl

__all__ = ["load_diffusers_unet", "load_edm_pkl"]
