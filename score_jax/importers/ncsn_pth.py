"""Official NCSN / NCSNv2 PyTorch checkpoints (`checkpoint.pth`) -> Flax parameters.

The file is read without torch by `importers.torch_pickle`, which rebuilds tensors,
containers and numbers and refuses anything else, so no code stored in it runs.
"""

import os
from typing import Any, Dict, Mapping, NamedTuple, Optional

import numpy as np
from flax import traverse_util

from score_jax.errors import CheckpointMismatchError
from score_jax.importers import torch_pickle

_PREFIX = "module."


def torch_key_to_flax_path(key: str) -> Optional[tuple]:
  """'module.res1.0.conv1.weight' -> ('res1_0', 'conv1', 'kernel'); None for buffers.

  List indices of nn.ModuleList join their parent's name, as linen names list members.
  """
  if key.startswith(_PREFIX):
    key = key[len(_PREFIX):]
  parts = key.split(".")
  if parts == ["sigmas"]:
    return None  # a buffer recomputed from the config
  out = []
  for part in parts:
    if part.isdigit() and out:
      out[-1] = f"{out[-1]}_{part}"
    else:
      out.append(part)
  # ConvMeanPool with adjust_padding wraps its conv in nn.Sequential(ZeroPad2d, conv).
  out = [("conv" if p == "conv_1" else p) for p in out]
  leaf = out[-1]
  if leaf == "weight" and len(out) >= 2 and out[-2] == "embed":
    return tuple(out[:-1])
  if leaf == "weight":
    return tuple(out[:-1]) + ("kernel",)
  return tuple(out)


def _to_flax_array(path: tuple, value: np.ndarray) -> np.ndarray:
  if path[-1] == "kernel" and value.ndim == 4:
    return np.transpose(value, (2, 3, 1, 0))  # OIHW -> HWIO
  return value


def state_dict_to_params(state_dict: Mapping[str, Any], target: Mapping[str, Any]) -> Dict:
  """Map a PyTorch state dict onto `target` (a Flax params tree), checking every shape.

  Args:
    state_dict: name -> array-like (torch tensors or NumPy arrays).
    target: the params tree of the model the checkpoint should fit (shapes are what count).

  Returns:
    A nested dict of float32 NumPy arrays with the structure of `target`.

  Raises:
    CheckpointMismatchError: naming the first key whose shape differs, or keys missing on
      either side.
  """
  flat_target = traverse_util.flatten_dict(dict(target))
  converted = {}
  for key, value in state_dict.items():
    path = torch_key_to_flax_path(key)
    if path is None:
      continue
    array = np.asarray(value.detach().cpu().numpy() if hasattr(value, "detach") else value)
    array = _to_flax_array(path, array)
    if path not in flat_target:
      raise CheckpointMismatchError(
          f"checkpoint key {key!r} (-> {'/'.join(path)}) has no counterpart in the model the "
          "config builds; is this checkpoint for another architecture or depth?")
    want = tuple(flat_target[path].shape)
    if tuple(array.shape) != want:
      raise CheckpointMismatchError(
          f"checkpoint key {key!r} has shape {tuple(array.shape)} (as Flax "
          f"{'/'.join(path)}), but the config's model expects {want}.")
    converted[path] = array.astype(np.float32)
  missing = sorted("/".join(p) for p in flat_target if p not in converted)
  if missing:
    raise CheckpointMismatchError(
        f"the checkpoint lacks {len(missing)} parameter(s) the model needs, first {missing[0]!r}.")
  return traverse_util.unflatten_dict(converted)


def _ncsnv2_ema_to_state_dict(ema_state: Mapping[str, Any]) -> Dict[str, Any]:
  # The official EMA helper stores names without the DataParallel prefix and no buffers.
  return {_PREFIX + k if not k.startswith(_PREFIX) else k: v for k, v in ema_state.items()}


class OfficialCheckpoint(NamedTuple):
  model_state: Mapping[str, Any]
  ema_state: Optional[Mapping[str, Any]]  # NCSNv2 files only
  step: int  # 0 when the file does not record it (NCSN)


def read_official_checkpoint(path: str) -> OfficialCheckpoint:
  """Load an official checkpoint.pth without torch and without executing code from it
  (`importers.torch_pickle`: only tensors, containers and numbers are rebuilt)."""
  if not os.path.isfile(path):
    raise FileNotFoundError(f"{path!r} is not a file; expected an official checkpoint.pth.")
  try:
    obj = torch_pickle.load(path)
  except torch_pickle.UnsafePickleError as e:
    raise CheckpointMismatchError(f"{path!r} was refused: {e}") from e
  except (ValueError, OSError) as e:
    raise CheckpointMismatchError(f"{path!r} is not a PyTorch checkpoint: {e}") from e
  if isinstance(obj, (list, tuple)) and obj and isinstance(obj[0], Mapping):
    ema_state = obj[4] if len(obj) >= 5 and isinstance(obj[4], Mapping) else None
    step = obj[3] if len(obj) >= 4 and isinstance(obj[3], int) else 0
    return OfficialCheckpoint(obj[0], ema_state, step)
  raise CheckpointMismatchError(
      f"{path!r} holds a {type(obj).__name__}; expected the official training loop's list "
      "[model_state, optimizer_state, ...] (NCSNv2 adds epoch, step, ema_state).")


def ncsnv2_ema_state_dict(ema_state: Mapping[str, Any]) -> Dict[str, Any]:
  """The EMA weights of an NCSNv2 file as a state dict of the network's names."""
  return _ncsnv2_ema_to_state_dict(ema_state)


def params_from_checkpoint(path: str, target, use_ema: bool) -> Dict:
  """The file's raw (use_ema False) or EMA weights mapped onto `target` (a params tree of
  shapes)."""
  model_state, ema_state, _ = read_official_checkpoint(path)
  if use_ema:
    if ema_state is None:
      raise CheckpointMismatchError(f"{path!r} has no EMA weights (use_ema=True was asked).")
    return state_dict_to_params(_ncsnv2_ema_to_state_dict(ema_state), target)
  return state_dict_to_params(model_state, target)
