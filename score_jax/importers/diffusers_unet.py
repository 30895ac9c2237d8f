"""diffusers-format DDPM folders (the google/ddpm-* repositories) -> `DDPMUNet` + Flax params.

A folder holds `config.json` (the `UNet2DModel` constructor arguments) and
`diffusion_pytorch_model.safetensors`. The weights are read with `safetensors.numpy`, so
neither torch nor pickle is involved. config.json is read as diffusers reads it: a key it
lacks takes the class default (`attention_head_dim` 8, `downsample_padding` 1, ...), which
is why the published google/ddpm-cifar10-32 (no `attention_head_dim` key) has 32 heads of
8 channels in diffusers while the original TensorFlow code used one head.
"""

import json
import os
from typing import Any, Dict, Tuple

import numpy as np
from flax import traverse_util

from score_jax.errors import CheckpointMismatchError
from score_jax.models.ddpm import DDPMUNet

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "diffusion_pytorch_model.safetensors"

# UNet2DModel's constructor defaults (diffusers 0.42): what a key missing from config.json means.
UNET2D_DEFAULTS: Dict[str, Any] = dict(
    sample_size=None, in_channels=3, out_channels=3, center_input_sample=False,
    time_embedding_type="positional", freq_shift=0, flip_sin_to_cos=True,
    down_block_types=("DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D"),
    up_block_types=("AttnUpBlock2D", "AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
    block_out_channels=(224, 448, 672, 896), layers_per_block=2, mid_block_scale_factor=1,
    downsample_padding=1, downsample_type="conv", upsample_type="conv", dropout=0.0,
    act_fn="silu", attention_legacy_order=False, attention_head_dim=8, norm_num_groups=32,
    attn_norm_num_groups=None, norm_eps=1e-5, resnet_time_scale_shift="default",
    add_attention=True, class_embed_type=None, num_class_embeds=None,
    num_train_timesteps=None)

# google/ddpm-cifar10-32's config.json as published (no attention_head_dim key: diffusers
# builds 32 heads of 8 channels where the original code had one head): DDPM's CIFAR-10 U-Net.
GOOGLE_DDPM_CIFAR10: Dict[str, Any] = dict(
    block_out_channels=[128, 256, 256, 256],
    down_block_types=["DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"],
    up_block_types=["UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"],
    downsample_padding=0, flip_sin_to_cos=False, freq_shift=1, norm_eps=1e-6, sample_size=32)

# Values that a DDPM U-Net must have: anything else is another architecture.
_REQUIRED = dict(center_input_sample=False, time_embedding_type="positional",
                 mid_block_scale_factor=1, downsample_type="conv", upsample_type="conv",
                 act_fn="silu", attention_legacy_order=False,
                 resnet_time_scale_shift="default", class_embed_type=None,
                 num_class_embeds=None)

# Attention weight names of the diffusers 0.0.x/0.1.x files -> the current ones.
_LEGACY_ATTENTION = {"query": "to_q", "key": "to_k", "value": "to_v", "proj_attn": "to_out.0"}


def read_unet_config(path: str) -> Dict[str, Any]:
  """config.json of a diffusers folder with every missing key at the class default."""
  file = os.path.join(path, CONFIG_FILE)
  if not os.path.isfile(file):
    raise FileNotFoundError(f"{file} does not exist; expected a diffusers UNet2DModel folder "
                            f"({CONFIG_FILE} + {WEIGHTS_FILE}).")
  with open(file) as f:
    try:
      raw = json.load(f)
    except json.JSONDecodeError as e:
      raise CheckpointMismatchError(f"{file} is not valid JSON: {e}") from e
  if raw.get("_class_name", "UNet2DModel") != "UNet2DModel":
    raise CheckpointMismatchError(
        f"{file} describes a {raw['_class_name']!r}; expected 'UNet2DModel' (a DDPM U-Net).")
  cfg = dict(UNET2D_DEFAULTS)
  cfg.update({k: v for k, v in raw.items() if not k.startswith("_")})
  return cfg


def unet_kwargs(unet_config: Dict[str, Any]) -> Dict[str, Any]:
  """`DDPMUNet` constructor arguments for a UNet2DModel config, or a one-line error naming
  the first key whose value the DDPM U-Net does not have."""
  for key, want in _REQUIRED.items():
    if unet_config.get(key) != want:
      raise CheckpointMismatchError(
          f"UNet2DModel config {key}={unet_config.get(key)!r}; a DDPM U-Net has {want!r}.")
  down, up = list(unet_config["down_block_types"]), list(unet_config["up_block_types"])
  chans = list(unet_config["block_out_channels"])
  if not len(down) == len(up) == len(chans):
    raise CheckpointMismatchError(
        f"UNet2DModel config has {len(down)} down blocks, {len(up)} up blocks and "
        f"{len(chans)} block_out_channels; expected the same number of each.")
  attn = []
  for i, (d, u) in enumerate(zip(down, reversed(up))):
    if d not in ("DownBlock2D", "AttnDownBlock2D"):
      raise CheckpointMismatchError(f"down_block_types[{i}]={d!r}; a DDPM U-Net has "
                                    "'DownBlock2D' or 'AttnDownBlock2D'.")
    if u not in ("UpBlock2D", "AttnUpBlock2D"):
      raise CheckpointMismatchError(f"up_block_types[{len(up) - 1 - i}]={u!r}; a DDPM U-Net "
                                    "has 'UpBlock2D' or 'AttnUpBlock2D'.")
    if (d == "AttnDownBlock2D") != (u == "AttnUpBlock2D"):
      raise CheckpointMismatchError(
          f"down_block_types[{i}]={d!r} but up_block_types[{len(up) - 1 - i}]={u!r}: a DDPM "
          "U-Net has attention at the same levels on the way down and up.")
    if d == "AttnDownBlock2D":
      attn.append(i)
  if unet_config["downsample_padding"] not in (0, 1):
    raise CheckpointMismatchError(
        f"downsample_padding={unet_config['downsample_padding']!r}; expected 0 or 1.")
  return dict(out_channels=int(unet_config["out_channels"]), block_out_channels=tuple(chans),
              num_res_blocks=int(unet_config["layers_per_block"]), attn_levels=tuple(attn),
              dropout=float(unet_config["dropout"]), num_groups=int(unet_config["norm_num_groups"]),
              mid_attention=bool(unet_config["add_attention"]),
              mid_attn_num_groups=unet_config["attn_norm_num_groups"],
              norm_eps=float(unet_config["norm_eps"]), attention_head_dim=unet_config["attention_head_dim"],
              resamp_with_conv=True, downsample_padding=int(unet_config["downsample_padding"]),
              freq_shift=float(unet_config["freq_shift"]),
              flip_sin_to_cos=bool(unet_config["flip_sin_to_cos"]))


def flax_path(key: str) -> Tuple[str, ...]:
  """'down_blocks.1.attentions.0.to_out.0.weight' -> ('down_blocks_1', 'attentions_0',
  'to_out_0', 'weight'); legacy attention names (query, proj_attn, ...) renamed first."""
  parts = key.split(".")
  if len(parts) >= 2 and parts[-2] in _LEGACY_ATTENTION:
    parts = parts[:-2] + _LEGACY_ATTENTION[parts[-2]].split(".") + parts[-1:]
  out = []
  for part in parts:
    if part.isdigit() and out:
      out[-1] = f"{out[-1]}_{part}"
    else:
      out.append(part)
  return tuple(out)


def state_dict_to_params(tensors: Dict[str, np.ndarray], target) -> Dict:
  """Map a diffusers state dict (name -> NumPy array, torch layouts) onto `target` (a Flax
  params tree, shapes only), checking every name and shape."""
  flat_target = traverse_util.flatten_dict(dict(target))
  converted = {}
  for key, value in tensors.items():
    path = flax_path(key)
    leaf, stem = path[-1], path[:-1]
    value = np.asarray(value)
    if leaf == "weight":
      if stem + ("kernel",) in flat_target:
        leaf = "kernel"
        if value.ndim == 4:
          value = np.transpose(value, (2, 3, 1, 0))  # OIHW -> HWIO
        elif value.ndim == 2:
          value = value.T  # (out, in) -> (in, out)
      else:
        leaf = "scale"  # GroupNorm
    full = stem + (leaf,)
    if full not in flat_target:
      raise CheckpointMismatchError(
          f"tensor {key!r} has no counterpart in the DDPM U-Net its config.json describes.")
    want = tuple(flat_target[full].shape)
    if tuple(value.shape) != want:
      raise CheckpointMismatchError(
          f"tensor {key!r} has shape {tuple(value.shape)} (as Flax {'/'.join(full)}); the "
          f"U-Net of config.json expects {want}.")
    converted[full] = value.astype(np.float32)
  missing = sorted("/".join(p) for p in flat_target if p not in converted)
  if missing:
    raise CheckpointMismatchError(
        f"the weights lack {len(missing)} tensor(s) the U-Net of config.json needs, first "
        f"{missing[0]!r}.")
  return traverse_util.unflatten_dict(converted)


def read_weights(path: str) -> Dict[str, np.ndarray]:
  """The safetensors file of a diffusers folder as name -> NumPy array (no torch, no pickle)."""
  file = os.path.join(path, WEIGHTS_FILE)
  if not os.path.isfile(file):
    raise FileNotFoundError(f"{file} does not exist; a diffusers folder needs {WEIGHTS_FILE} "
                            "(the .bin pickle is not read).")
  from safetensors import SafetensorError  # pylint: disable=g-import-not-at-top
  from safetensors.numpy import load_file  # pylint: disable=g-import-not-at-top
  try:
    return load_file(file)
  except (SafetensorError, OSError, ValueError) as e:
    raise CheckpointMismatchError(f"{file} is not a readable safetensors file: {e}") from e


def load_diffusers_unet(path: str):
  """(model, variables) from a diffusers UNet2DModel folder.

  `model.apply(variables, x, t)` with x float32 [B, H, W, C] and t int32 [B] (0..T-1)
  returns epsilon, [B, H, W, out_channels], as the diffusers model does in NCHW.
  """
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  cfg = read_unet_config(path)
  model = DDPMUNet(**unet_kwargs(cfg))
  # Parameter shapes do not depend on the image size: trace the smallest size every level
  # can halve, whatever sample_size says (it may be non-square or absent).
  size = 2 ** len(cfg["block_out_channels"])
  shapes = jax.eval_shape(lambda: model.init(
      jax.random.PRNGKey(0), jnp.zeros((1, size, size, cfg["in_channels"])),
      jnp.zeros((1,), jnp.int32)))["params"]
  params = state_dict_to_params(read_weights(path), shapes)
  return model, {"params": jax.tree.map(jnp.asarray, params)}


def check_schedule(path: str, diffusion: dict) -> None:
  """scheduler_config.json, when present, must describe the forward process `diffusion`
  (beta_schedule, beta_start, beta_end, num_timesteps: the config's section)."""
  file = os.path.join(path, "scheduler_config.json")
  if not os.path.isfile(file):
    return
  with open(file) as f:
    sched = json.load(f)
  pairs = (("num_train_timesteps", "num_timesteps", 1000), ("beta_start", "beta_start", 1e-4),
           ("beta_end", "beta_end", 0.02), ("beta_schedule", "beta_schedule", "linear"))
  for theirs, ours, default in pairs:
    value = sched.get(theirs, default)
    if value != diffusion[ours]:
      raise CheckpointMismatchError(
          f"{file} has {theirs}={value!r}, but config.diffusion.{ours}={diffusion[ours]!r}; "
          f"set --config.diffusion.{ours}={value!r} to convert this model.")


_COMPARED = ("out_channels", "block_out_channels", "num_res_blocks", "attn_levels",
             "num_groups", "mid_attention", "mid_attn_num_groups", "norm_eps",
             "attention_head_dim", "resamp_with_conv", "downsample_padding", "freq_shift",
             "flip_sin_to_cos")


def converter(path: str, ours, diffusion: dict):
  """`to_params(target) -> (params, None)` for a diffusers DDPM folder whose U-Net must be
  `ours` (every constructor argument compared) and whose scheduler must be `diffusion`.
  The weights are read now: a folder that does not fit fails before anything is written."""
  theirs = DDPMUNet(**unet_kwargs(read_unet_config(path)))
  if not isinstance(ours, DDPMUNet):
    raise CheckpointMismatchError(f"{path} holds a DDPM U-Net; the config builds a "
                                  f"{type(ours).__name__} (model.name).")
  norm = lambda v: tuple(v) if isinstance(v, (list, tuple)) else v
  for field in _COMPARED:
    a, b = getattr(theirs, field), getattr(ours, field)
    if norm(a) != norm(b):
      raise CheckpointMismatchError(
          f"{path}/{CONFIG_FILE} gives the U-Net {field}={a!r}; the config builds {b!r}. Use "
          "a config of that model (the model section sets it).")
  check_schedule(path, diffusion)
  tensors = read_weights(path)
  return lambda target: (state_dict_to_params(tensors, target), None)
