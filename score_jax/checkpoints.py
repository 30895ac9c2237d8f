"""Orbax checkpoints of the TrainState, each with a JSON signature of the model it holds.

The signature (the config's `model` section, image size and channels) is checked before a
restore, so pointing a run at a workdir of another model fails with the differing keys
named instead of a shape error deep in orbax, and nothing in that workdir is touched.
"""

import json
import os
from typing import Optional

import grain
import jax
import orbax.checkpoint as ocp


def model_signature(config) -> dict:
  """What must agree between a checkpoint and the config that restores it."""
  sig = {f"model.{k}": v for k, v in config.model.to_dict().items()
         if k not in ("ema_rate",)}
  sig["data.image_size"] = config.data.image_size
  sig["data.channels"] = config.data.channels
  if config.model.name == "ddpm":  # the network's t is an index into this schedule
    sig.update({f"diffusion.{k}": v for k, v in config.diffusion.to_dict().items()})
  # As JSON stores it (tuples become lists), so that a restored signature compares equal.
  return json.loads(json.dumps(sig))


class CheckpointMismatchError(ValueError):
  """The workdir holds a checkpoint of another model."""


class Checkpointer:
  """Saves and restores TrainStates under workdir/checkpoints, keeping the last `keep`."""

  def __init__(self, workdir: str, config, keep: int = 3, create: bool = True):
    """create=False for readers (sampling, evaluation): a missing folder stays missing."""
    self.directory = os.path.abspath(os.path.join(workdir, "checkpoints"))
    self._signature = model_signature(config)
    options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=create)
    self._manager = ocp.CheckpointManager(
        self.directory, options=options, item_names=("state", "model", "data"),
        item_handlers={"data": grain.checkpoint.CheckpointHandler()})

  def latest_step(self) -> Optional[int]:
    return self._manager.latest_step()

  def check_signature(self, step: int) -> None:
    """Raise CheckpointMismatchError when the checkpoint at `step` is of another model."""
    stored = self._manager.restore(step, args=ocp.args.Composite(model=ocp.args.JsonRestore()))
    stored = stored.model
    diffs = [(k, stored.get(k), v) for k, v in self._signature.items() if stored.get(k) != v]
    if diffs:
      lines = "; ".join(f"{k}: checkpoint {a!r}, config {b!r}" for k, a, b in diffs)
      raise CheckpointMismatchError(
          f"{self.directory} holds a checkpoint (step {step}) of another model ({lines}). "
          "Use another --workdir, or the config that made it.")

  def all_steps(self):
    """The steps of the kept checkpoints, ascending."""
    return sorted(self._manager.all_steps())

  def restore(self, step: int, state):
    """The checkpoint at `step` restored into the structure and shardings of `state`."""
    if step not in self._manager.all_steps():
      raise FileNotFoundError(f"no checkpoint at step {step} in {self.directory}; kept: "
                              f"{self.all_steps()}.")
    self.check_signature(step)
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, state)
    return self._manager.restore(
        step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract))).state

  def restore_latest(self, state, data_iterator=None):
    """The newest checkpoint restored into the structure and shardings of `state`,
    or `state` itself when there is none. With `data_iterator` (a grain iterator), its
    position is restored in place too, when the checkpoint holds one (a converted checkpoint
    does not: the data stream then starts afresh)."""
    step = self.latest_step()
    if step is None:
      return state
    self.check_signature(step)
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, state)
    items = dict(state=ocp.args.StandardRestore(abstract))
    if data_iterator is not None and os.path.isdir(os.path.join(self.directory, str(step),
                                                                "data")):
      items["data"] = grain.checkpoint.CheckpointRestore(data_iterator)
    restored = self._manager.restore(step, args=ocp.args.Composite(**items))
    return restored.state

  def save(self, step: int, state, data_iterator=None) -> None:
    """Save `state` (and the position of `data_iterator`, a grain iterator, per process)."""
    items = dict(state=ocp.args.StandardSave(state), model=ocp.args.JsonSave(self._signature))
    if data_iterator is not None:
      # The save runs in a background thread while training goes on: hand it the position
      # now, not the live iterator.
      items["data"] = grain.checkpoint.CheckpointSave(
          _FrozenPosition(json.dumps(data_iterator.get_state()).encode()))
    self._manager.save(step, args=ocp.args.Composite(**items))

  def wait(self) -> None:
    self._manager.wait_until_finished()


class _FrozenPosition:
  """A grain iterator position taken at save time (grain's handler calls get_state())."""

  def __init__(self, state: bytes):
    self._state = state

  def get_state(self) -> bytes:
    return self._state
