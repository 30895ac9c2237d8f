"""Orbax checkpoints of the TrainState, each with a JSON signature of the model it holds.

The signature (the config's `model` section, image size and channels) is checked before a
restore, so pointing a run at a workdir of another model fails with the differing keys
named instead of a shape error deep in orbax, and nothing in that workdir is touched.
"""

import os
from typing import Optional

import jax
import orbax.checkpoint as ocp


def model_signature(config) -> dict:
  """What must agree between a checkpoint and the config that restores it."""
  sig = {f"model.{k}": v for k, v in config.model.to_dict().items()
         if k not in ("ema_rate",)}
  sig["data.image_size"] = config.data.image_size
  sig["data.channels"] = config.data.channels
  return sig


class CheckpointMismatchError(ValueError):
  """The workdir holds a checkpoint of another model."""


class Checkpointer:
  """Saves and restores TrainStates under workdir/checkpoints, keeping the last `keep`."""

  def __init__(self, workdir: str, config, keep: int = 3):
    self.directory = os.path.abspath(os.path.join(workdir, "checkpoints"))
    self._signature = model_signature(config)
    options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True)
    self._manager = ocp.CheckpointManager(self.directory, options=options,
                                          item_names=("state", "model"))

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

  def restore_latest(self, state):
    """The newest checkpoint restored into the structure and shardings of `state`,
    or `state` itself when there is none."""
    step = self.latest_step()
    if step is None:
      return state
    self.check_signature(step)
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, state)
    restored = self._manager.restore(
        step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract)))
    return restored.state

  def save(self, step: int, state) -> None:
    self._manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), model=ocp.args.JsonSave(self._signature)))

  def wait(self) -> None:
    self._manager.wait_until_finished()
