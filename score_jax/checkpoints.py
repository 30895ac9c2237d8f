"""Orbax checkpoints of the TrainState, each with a JSON signature of the model it holds
and a checksum of every array.

The signature (the config's `model` section, image size and channels, made by
`build.model_signature`) is checked before a
restore, so pointing a run at a workdir of another model fails with the differing keys
named instead of a shape error deep in orbax, and nothing in that workdir is touched.

Checksums: orbax's array files carry no checksum of their data (zarr3 checks only the chunk
index), so bytes overwritten in place restore silently as other numbers. Every save stores a
32-bit checksum of each array, computed on the devices; every restore recomputes and
compares them. A checkpoint with non-finite values is never written. A damaged newest
checkpoint (unreadable, or checksums that disagree) makes `restore_latest` fall back to the
previous one with a warning.
"""

import json
import os
import shutil
import sys
import time
from typing import Optional

import grain
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from jax.experimental import multihost_utils

from score_jax.errors import CheckpointMismatchError  # pylint: disable=unused-import


class CorruptCheckpointError(ValueError):
  """A checkpoint cannot be read, or its arrays disagree with their stored checksums."""


class NonFiniteError(FloatingPointError):
  """Training produced NaN or Inf; nothing non-finite was saved."""


def _as_uint32(x):
  """The bits of `x` as uint32 values (any dtype, any shape)."""
  x = jnp.asarray(x)
  if x.dtype == jnp.bool_:
    return x.astype(jnp.uint32)
  size = x.dtype.itemsize
  unsigned = {1: jnp.uint8, 2: jnp.uint16, 4: jnp.uint32, 8: jnp.uint32}[size]
  return jax.lax.bitcast_convert_type(x, unsigned).astype(jnp.uint32)


def leaf_finite(x) -> jax.Array:
  """True when `x` holds no NaN or Inf (always for integer and boolean arrays)."""
  x = jnp.asarray(x)
  return (jnp.all(jnp.isfinite(x)) if jnp.issubdtype(x.dtype, jnp.inexact)
          else jnp.array(True))


@jax.jit
def _fingerprint(tree):
  """Per leaf: (sum of bits[i] * (2i + 1) mod 2**32, all finite).

  The odd weights make every single-byte change visible (a change of d * 256**k, |d| < 256,
  times an odd number is never 0 mod 2**32) and tie each value to its position; integer
  sums wrap exactly whatever the order, so the number does not depend on the device count.
  """
  def one(x):
    bits = _as_uint32(x).ravel()
    weights = 2 * jnp.arange(bits.size, dtype=jnp.uint32) + 1
    return jnp.sum(bits * weights, dtype=jnp.uint32), leaf_finite(x)
  return jax.tree.map(one, tree)


def fingerprint(tree) -> tuple[dict, list]:
  """({leaf path: 8-hex-digit checksum}, [paths of leaves holding NaN or Inf])."""
  leaves = jax.tree_util.tree_flatten_with_path(_fingerprint(tree))[0]
  sums, bad = {}, []
  # Leaves come in (checksum, finite) pairs, the pair's index last in the path.
  for (path, value) in leaves:
    name = jax.tree_util.keystr(path[:-1], simple=True, separator="/")
    if path[-1].idx == 0:
      sums[name] = f"{int(np.asarray(value)):08x}"
    elif not bool(np.asarray(value)):
      bad.append(name)
  return sums, bad


class Checkpointer:
  """Saves and restores TrainStates under workdir/checkpoints, keeping the last `keep`."""

  def __init__(self, workdir: str, signature: dict, keep: Optional[int] = 3,
               create: bool = True, subdir: str = "checkpoints"):
    """`signature`: what the checkpoints must agree with (`build.Built.signature`, JSON
    values). keep=None keeps every step. create=False for readers (sampling, evaluation): a
    missing folder stays missing. `subdir`: the folder under workdir (post-hoc EMA
    snapshots live in their own)."""
    self.directory = os.path.abspath(os.path.join(workdir, subdir))
    self._signature = signature
    # A run killed during a save leaves a tmp folder; the next writer removes it.
    options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=create,
                                           cleanup_tmp_directories=create)
    self._manager = ocp.CheckpointManager(
        self.directory, options=options, item_names=("state", "model", "data", "checksums"),
        item_handlers={"data": grain.checkpoint.CheckpointHandler()})

  def latest_step(self) -> Optional[int]:
    return self._manager.latest_step()

  def stored_signature(self, step: int) -> dict:
    """The model signature saved with the checkpoint at `step`."""
    return dict(self._manager.restore(
        step, args=ocp.args.Composite(model=ocp.args.JsonRestore())).model)

  def check_signature(self, step: int) -> None:
    """Raise CheckpointMismatchError when the checkpoint at `step` is of another model."""
    stored = self.stored_signature(step)
    diffs = [(k, stored.get(k), v) for k, v in self._signature.items() if stored.get(k) != v]
    if diffs:
      lines = "; ".join(f"{k}: checkpoint {a!r}, config {b!r}" for k, a, b in diffs)
      raise CheckpointMismatchError(
          f"{self.directory} holds a checkpoint (step {step}) of another model ({lines}). "
          "Use another --workdir, or the config that made it.")

  def all_steps(self):
    """The steps of the kept checkpoints, ascending."""
    return sorted(self._manager.all_steps())

  def restore(self, step: int, state, data_iterator=None):
    """The checkpoint at `step` restored into the structure and shardings of `state` (arrays
    or jax.ShapeDtypeStruct leaves, as `state.abstract_state` gives), its checksums
    verified. With `data_iterator` (a grain iterator), its position is restored in place
    too, when the checkpoint holds one (a converted checkpoint does not).

    Raises CorruptCheckpointError when it cannot be read or its arrays are not the ones saved.
    """
    if step not in self._manager.all_steps():
      raise FileNotFoundError(f"no checkpoint at step {step} in {self.directory}; kept: "
                              f"{self.all_steps()}.")
    self.check_signature(step)
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, state)
    items = dict(state=ocp.args.StandardRestore(abstract))
    step_dir = os.path.join(self.directory, str(step))
    if data_iterator is not None and os.path.isdir(os.path.join(step_dir, "data")):
      items["data"] = grain.checkpoint.CheckpointRestore(data_iterator)
    has_sums = os.path.isdir(os.path.join(step_dir, "checksums"))
    if has_sums:
      items["checksums"] = ocp.args.JsonRestore()
    try:
      restored = self._manager.restore(step, args=ocp.args.Composite(**items))
    # orbax and tensorstore raise many types for damaged files (ValueError, OSError,
    # KeyError, JSONDecodeError, tensorstore's own); all mean this checkpoint is unreadable.
    except Exception as e:  # pylint: disable=broad-except
      message = str(e).strip().splitlines()[0][:200] if str(e).strip() else ""
      raise CorruptCheckpointError(f"checkpoint {step_dir} cannot be read "
                                   f"({type(e).__name__}: {message})") from e
    sums, bad = fingerprint(restored.state)
    if has_sums:
      stored = restored.checksums["arrays"]
      wrong = [k for k in sums if stored.get(k) != sums[k]]
      if wrong or set(stored) != set(sums):
        raise CorruptCheckpointError(
            f"checkpoint {step_dir}: {len(wrong) or 'the set of'} array(s) differ from their "
            f"checksums ({', '.join(wrong[:3]) or 'other arrays'}): the files were changed "
            "after saving")
    else:
      logging.warning("%s has no checksums (saved by an older score_jax); not verified.",
                      step_dir)
    if bad:
      raise CorruptCheckpointError(f"checkpoint {step_dir} holds NaN or Inf in {bad[0]}")
    return restored.state

  def restore_latest(self, state, data_iterator=None, quarantine: bool = False):
    """The newest intact checkpoint restored into the structure and shardings of `state`
    (arrays or jax.ShapeDtypeStruct leaves), or None when there is none. With
    `data_iterator` (a grain iterator), its position is restored in place too, when the
    checkpoint holds one (a converted checkpoint does not: the data stream then starts
    afresh).

    A damaged checkpoint is skipped with a warning for the one before it; quarantine=True
    (training, which will save those steps again) moves it to `checkpoints_corrupt/` first.
    Raises CorruptCheckpointError when checkpoints exist but none is intact.
    """
    failures = []
    for step in reversed(self.all_steps()):
      try:
        return self.restore(step, state, data_iterator)
      except CorruptCheckpointError as e:
        failures.append(str(e))
        print(f"warning: {e}; trying the previous checkpoint.", file=sys.stderr)
        if quarantine:
          self._quarantine(step)
    if failures:
      raise CorruptCheckpointError(f"no intact checkpoint in {self.directory}: "
                                   + "; ".join(failures))
    return None

  def _quarantine(self, step: int) -> None:
    """Move a damaged step out of orbax's sight, keeping its files for inspection."""
    if jax.process_index() == 0:
      target = os.path.join(os.path.dirname(self.directory), "checkpoints_corrupt",
                            f"{step}-{time.strftime('%Y%m%d-%H%M%S')}")
      os.makedirs(os.path.dirname(target), exist_ok=True)
      shutil.move(os.path.join(self.directory, str(step)), target)
      print(f"warning: moved the damaged step {step} to {target}.", file=sys.stderr)
    if jax.process_count() > 1:
      multihost_utils.sync_global_devices(f"quarantine_{step}")
    self._manager.reload()

  def save(self, step: int, state, data_iterator=None) -> None:
    """Save `state` (and the position of `data_iterator`, a grain iterator, per process),
    with the checksums of its arrays. Raises NonFiniteError, writing nothing, when `state`
    holds NaN or Inf."""
    sums, bad = fingerprint(state)
    if bad:
      last = self.latest_step()
      raise NonFiniteError(
          f"NaN or Inf in {bad[0]} at step {step}; not saved. Last good checkpoint: "
          + (f"step {last} in {self.directory}." if last is not None else "none."))
    items = dict(state=ocp.args.StandardSave(state), model=ocp.args.JsonSave(self._signature),
                 checksums=ocp.args.JsonSave({"arrays": sums}))
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


def open_trained(workdir: str, built, mesh, keep: Optional[int] = None):
  """(Checkpointer, abstract TrainState) of a trained workdir, for the jobs that read one
  (sampling, evaluation): the workdir must hold a checkpoint of the built model.

  Raises FileNotFoundError when it has none; CheckpointMismatchError is raised by the
  restore when it holds another model's.
  """
  from score_jax import state as state_lib  # pylint: disable=g-import-not-at-top
  ckpt = Checkpointer(workdir, built.signature,
                      keep=built.train.keep_checkpoints if keep is None else keep, create=False)
  if ckpt.latest_step() is None:
    raise FileNotFoundError(f"no checkpoint in {ckpt.directory}; train first "
                            "(--mode=train) or convert an official one.")
  return ckpt, state_lib.abstract_state(built, mesh)


def restore_finite_params(ckpt: Checkpointer, step: int, target):
  """The EMA parameters (raw when none kept) of the checkpoint at `step`; ValueError when
  they hold NaN or Inf."""
  params = ckpt.restore(step, target).ema_params
  if not all(bool(np.all(np.isfinite(np.asarray(x)))) for x in jax.tree.leaves(params)):
    raise ValueError(f"the checkpoint at step {step} holds non-finite weights; refusing "
                     "to score it.")
  return params
