"""Official NCSN / NCSNv2 PyTorch checkpoints -> Flax variables for `get_model(config)`.

    python -m score_jax.convert --checkpoint=PATH --config=CONFIG --workdir=DIR

writes an orbax checkpoint in DIR that `main.py --mode=sample` uses. The file is read
without torch by `importers.torch_pickle`, which rebuilds tensors, containers and numbers
and refuses anything else, so no code stored in it runs.
"""

import os
from typing import Any, Dict, Mapping, NamedTuple, Optional

import numpy as np
from flax import traverse_util

_PREFIX = "module."


class CheckpointMismatchError(ValueError):
  """The checkpoint does not fit the model the config builds."""


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
  from score_jax.importers import torch_pickle  # pylint: disable=g-import-not-at-top
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


def _abstract_params(config):
  """Shapes of `get_model(config)`'s params, traced without computing them."""
  import jax  # pylint: disable=g-import-not-at-top
  from score_jax import models  # pylint: disable=g-import-not-at-top
  model = models.get_model(config)
  return jax.eval_shape(
      lambda: model.init(jax.random.PRNGKey(0), *models.example_inputs(config)))["params"]


def load_official_checkpoint(path: str, config, use_ema: Optional[bool] = None) -> Dict:
  """Flax variables {'params': ...} for `get_model(config)` from an official checkpoint.

  Args:
    path: an official `checkpoint.pth` / `checkpoint_N.pth`.
    config: the score_jax config whose model the weights should fit.
    use_ema: True for the EMA weights, False for the raw ones; None (default) takes the EMA
      weights when the file has them and `config.model.ema` is set.
  """
  model_state, ema_state, _ = read_official_checkpoint(path)
  if use_ema is None:
    use_ema = bool(config.model.ema) and ema_state is not None
  if use_ema:
    if ema_state is None:
      raise CheckpointMismatchError(f"{path!r} has no EMA weights (use_ema=True was asked).")
    state = _ncsnv2_ema_to_state_dict(ema_state)
  else:
    state = model_state
  return {"params": state_dict_to_params(state, _abstract_params(config))}


def convert_to_workdir(path: str, config, workdir: str) -> int:
  """Write an official checkpoint as a score_jax orbax checkpoint in workdir.

  The raw weights become the TrainState's params and, when the config keeps an EMA, the
  file's EMA weights (or the raw ones if it has none) the optimizer's EMA, so
  `main.py --mode=sample` samples from what the official code would. Adam's moments start
  fresh: the official optimizer state is not carried over.

  Returns:
    the step the checkpoint is saved at (the official step when the file records it).
  """
  from score_jax import train  # pylint: disable=g-import-not-at-top

  train.validate_config(config)
  # Read first: a file that is not a checkpoint leaves the workdir as it was.
  model_state, ema_state, step = read_official_checkpoint(path)

  def to_params(target):
    raw = state_dict_to_params(model_state, target)
    ema = None if ema_state is None else state_dict_to_params(
        _ncsnv2_ema_to_state_dict(ema_state), target)
    return raw, ema

  return write_converted(config, workdir, to_params, step)


def write_converted(config, workdir: str, to_params, step: int = 0) -> int:
  """Save converted weights as the TrainState of step `step` in a workdir without
  checkpoints; the one writer of every importer.

  `to_params(target)` maps the weights onto `target` (the state's params as
  jax.ShapeDtypeStruct leaves, which give the shapes) and returns (params, ema or None);
  the EMA (the params when None) goes into the optimizer's parameter EMA when the config
  keeps one, so `--mode=sample` uses it.
  Adam's moments start fresh. Nothing is created in the workdir before the weights have
  mapped without error.
  """
  import jax  # pylint: disable=g-import-not-at-top
  from score_jax import checkpoints, optim, sharding, state as state_lib  # pylint: disable=g-import-not-at-top

  existing = checkpoints.Checkpointer(workdir, config, create=False).latest_step()
  if existing is not None:
    raise FileExistsError(
        f"{os.path.join(os.path.abspath(workdir), 'checkpoints')} already holds checkpoints "
        f"(newest step {existing}); convert into an empty --workdir so that nothing is "
        "overwritten.")
  mesh = sharding.data_mesh()
  _, tx, target = state_lib.abstract_state(config, mesh)
  # Shapes are all the mapping needs: nothing is initialised (compiling `init` is slow).
  params, ema = to_params(target.params)
  replicated = target.step.sharding
  put = lambda tree: jax.device_put(tree, replicated)
  params = put(params)
  # Fresh optimizer state (Adam's moments zero) from the converted weights.
  opt_state = jax.jit(tx.init, out_shardings=replicated)(params)
  if optim.ema_of(opt_state) is not None:
    opt_state = optim.with_ema(opt_state, put(params if ema is None else ema))
  state = state_lib.TrainState(step=put(np.asarray(step, np.int32)), params=params,
                               opt_state=opt_state)
  ckpt = checkpoints.Checkpointer(workdir, config, keep=config.training.keep_checkpoints)
  ckpt.save(step, state)
  ckpt.wait()
  return step


def main(argv):
  from absl import flags  # pylint: disable=g-import-not-at-top
  del argv
  f = flags.FLAGS
  step = convert_to_workdir(f.checkpoint, f.config, f.workdir)
  print(f"Wrote step {step} of {f.checkpoint} to {f.workdir}/checkpoints; sample with "
        f"python main.py --config=... --mode=sample --workdir={f.workdir}")


if __name__ == "__main__":
  from absl import app, flags  # pylint: disable=g-import-not-at-top
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top
  flags.DEFINE_string("checkpoint", None, "Official checkpoint.pth.")
  flags.DEFINE_string("workdir", None, "Where to write the orbax checkpoint.")
  config_flags.DEFINE_config_file("config", None, "score_jax config.", lock_config=True)
  flags.mark_flags_as_required(["checkpoint", "workdir", "config"])
  app.run(main)


