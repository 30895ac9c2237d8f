"""Official weights -> Flax, without executing code from any file.

- `load_diffusers_unet(path)`: a diffusers DDPM folder (config.json + safetensors).
- `load_edm_pkl(path)`: an EDM network-snapshot-*.pkl (restricted unpickler, no torch).
- `ncsn_pth`: NCSN / NCSNv2 `checkpoint.pth` files (`torch_pickle`: no torch, no pickle code).

Each module only reads and maps weights (and checks them against a network); writing them
as a workdir is `score_jax.convert`'s job.
"""

from score_jax.importers.diffusers_unet import load_diffusers_unet
from score_jax.importers.edm_pkl import load_edm_pkl

__all__ = ["load_diffusers_unet", "load_edm_pkl"]
