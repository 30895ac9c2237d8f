"""`--mode=convert`: official weights -> a score_jax workdir that `--mode=sample` and
`--mode=eval` use; and `load_official_checkpoint`, NCSN / NCSNv2 `.pth` weights as Flax
variables.

The readers live in `score_jax.importers` (each file read without torch, no pickle code run);
this module writes what they read as a TrainState checkpoint.
"""

import os
from typing import Dict, Optional

import jax
import numpy as np

from score_jax import checkpoints, optim, sharding, state as state_lib
from score_jax.errors import CheckpointMismatchError  # pylint: disable=unused-import
from score_jax.importers import diffusers_unet, edm_pkl, ncsn_pth
# The NCSN / NCSNv2 reader's names, for callers of this module.
from score_jax.importers.ncsn_pth import (read_official_checkpoint, state_dict_to_params,  # pylint: disable=unused-import
                                         torch_key_to_flax_path)


def load_official_checkpoint(path: str, config, use_ema: Optional[bool] = None) -> Dict:
  """Flax variables {'params': ...} for the network of `config` from an official NCSN /
  NCSNv2 checkpoint.pth.

  Args:
    path: an official `checkpoint.pth` / `checkpoint_N.pth`.
    config: the score_jax config whose network the weights should fit.
    use_ema: True for the EMA weights, False for the raw ones; None (default) takes the EMA
      weights when the file has them and `config.model.ema` is set.
  """
  from score_jax import build, models  # pylint: disable=g-import-not-at-top
  net = build.network(config)
  inputs = models.example_inputs(net, config.data.image_size, config.data.channels)
  target = jax.eval_shape(lambda: net.init(jax.random.PRNGKey(0), *inputs))["params"]
  if use_ema is None:
    use_ema = bool(config.model.ema) and read_official_checkpoint(path).ema_state is not None
  return {"params": ncsn_pth.params_from_checkpoint(path, target, use_ema)}


def _ncsn_converter(path: str):
  """to_params for an NCSN/NCSNv2 .pth: (raw weights, EMA weights or None), and its step."""
  model_state, ema_state, step = read_official_checkpoint(path)

  def to_params(target):
    raw = state_dict_to_params(model_state, target)
    ema = None if ema_state is None else state_dict_to_params(
        ncsn_pth.ncsnv2_ema_state_dict(ema_state), target)
    return raw, ema

  return to_params, step


def convert_to_workdir(built, workdir: str) -> int:
  """Write `built.convert_path` (an NCSN/NCSNv2 .pth, a diffusers DDPM folder or an EDM
  network-snapshot-*.pkl) as a score_jax checkpoint in an empty workdir; the file must hold
  the network `built` builds. Returns the step written (the official step when the file
  records it, else 0). Every file is read, and checked against the network, before anything
  is created in the workdir."""
  path, step = built.convert_path, 0
  if path.endswith(".pkl"):
    to_params = edm_pkl.converter(path, built.network)
  elif built.name == "ddpm":
    diffusion = {k.split(".", 1)[1]: v for k, v in built.signature.items()
                 if k.startswith("diffusion.")}
    to_params = diffusers_unet.converter(path, built.network, diffusion)
  else:
    to_params, step = _ncsn_converter(path)
  return write_converted(built, workdir, to_params, step)


def write_converted(built, workdir: str, to_params, step: int = 0) -> int:
  """Save converted weights as the TrainState of step `step` in a workdir without
  checkpoints; the one writer of every importer.

  `to_params(target)` maps the weights onto `target` (the state's params as
  jax.ShapeDtypeStruct leaves, which give the shapes) and returns (params, ema or None);
  the EMA (the params when None) goes into the optimizer's parameter EMA when the run
  keeps one, so `--mode=sample` uses it. Adam's moments start fresh. Nothing is created in
  the workdir before the weights have mapped without error.
  """
  existing = checkpoints.Checkpointer(workdir, built.signature, create=False).latest_step()
  if existing is not None:
    raise FileExistsError(
        f"{os.path.join(os.path.abspath(workdir), 'checkpoints')} already holds checkpoints "
        f"(newest step {existing}); convert into an empty --workdir so that nothing is "
        "overwritten.")
  mesh = sharding.data_mesh()
  target = state_lib.abstract_state(built, mesh)
  # Shapes are all the mapping needs: nothing is initialised (compiling `init` is slow).
  params, ema = to_params(target.params)
  replicated = target.step.sharding
  put = lambda tree: jax.device_put(tree, replicated)
  params = put(params)
  # Fresh optimizer state (Adam's moments zero) from the converted weights.
  opt_state = jax.jit(built.optimizer.init, out_shardings=replicated)(params)
  if optim.ema_of(opt_state) is not None:
    opt_state = optim.with_ema(opt_state, put(params if ema is None else ema))
  state = state_lib.TrainState(step=put(np.asarray(step, np.int32)), params=params,
                               opt_state=opt_state)
  ckpt = checkpoints.Checkpointer(workdir, built.signature, keep=built.train.keep_checkpoints)
  ckpt.save(step, state)
  ckpt.wait()
  return step


def main(argv):
  """`python -m score_jax.convert --checkpoint=PATH --config=CONFIG --workdir=DIR`: the
  same as main.py --mode=convert with --config.convert.path=PATH."""
  from absl import flags  # pylint: disable=g-import-not-at-top
  from score_jax import build  # pylint: disable=g-import-not-at-top
  del argv
  f = flags.FLAGS
  f.config.convert.path = f.checkpoint
  built = build.build(f.config, "convert")
  step = convert_to_workdir(built, f.workdir)
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
