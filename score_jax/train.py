"""Training: the jit-compiled data-parallel train step and the training loop, for every
method (the method's loss comes from `methods.get_method`)."""

import os
import signal
import threading
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
import tqdm
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding, PartitionSpec as P

from score_jax import checkpoints, data, generate, images, methods, metrics, optim, sharding
# The state and its construction live in `state`; re-exported for callers of round one.
from score_jax.state import (TrainState, abstract_state, build, fresh_state, init_state,  # pylint: disable=unused-import
                             rng_keys, validate_config)


def accumulation_rounds(config) -> int:
  """Passes per step: the per-device batch in chunks of `training.batch_gpu` (EDM's
  --batch-gpu; 0 = one pass), gradients averaged, for batches that do not fit at once."""
  t = config.training
  per_device = t.batch_size // jax.device_count()
  if not t.batch_gpu:
    return 1
  if t.batch_gpu < 0 or per_device % t.batch_gpu:
    raise ValueError(f"config.training.batch_gpu={t.batch_gpu!r} must divide the per-device "
                     f"batch {per_device} (training.batch_size {t.batch_size} over "
                     f"{jax.device_count()} device(s)).")
  return per_device // t.batch_gpu


def make_train_step(config, model, tx) -> Callable:
  """The pure step (state, batch, base_key) -> (state, {'loss', 'lr', 'finite'}), where
  batch is images [B, H, W, C] in [0, 1] or the pipeline's dict {'image', 'label'}, 'lr' is
  the learning rate this step used and 'finite' is False when the loss or any array of the
  new state holds NaN or Inf.

  The step's randomness is fold_in(base_key, state.step): no RNG state to carry, and the
  same for any device count. With `accumulation_rounds` > 1 the batch is taken in rounds
  (row r * rounds + j in round j, so every device keeps its own rows) and the gradients
  averaged; each round's loss gets the rows' places in the batch (`sample_ids`).
  """
  loss_fn = methods.get_method(config, model).loss_fn
  lr_fn = optim.learning_rate(config)
  rounds = accumulation_rounds(config)
  grad_fn = jax.value_and_grad(loss_fn)

  def train_step(state: TrainState, batch, base_key):
    images, labels = ((batch["image"], batch.get("label")) if isinstance(batch, dict)
                      else (batch, None))
    key = jax.random.fold_in(base_key, state.step)
    if rounds == 1:
      loss, grads = grad_fn(state.params, images, key, labels)
    else:
      n = images.shape[0]
      split = lambda a: None if a is None else jnp.swapaxes(
          a.reshape((n // rounds, rounds) + a.shape[1:]), 0, 1)
      ids = split(jnp.arange(n))

      def one_round(acc, xs):
        im, lab, idx = xs
        loss, grads = grad_fn(state.params, im, key, lab, idx)
        return jax.tree.map(jnp.add, acc, (loss, grads)), None

      zero = (jnp.zeros([], jnp.float32), jax.tree.map(jnp.zeros_like, state.params))
      (loss, grads), _ = jax.lax.scan(one_round, zero, (split(images), split(labels), ids))
      loss, grads = jax.tree.map(lambda v: v / rounds, (loss, grads))
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state)
    # One flag for the loss, the parameters and every float in the optimizer state (the EMA
    # lives there): the loop stops at the first step that made any of them NaN or Inf.
    finite = jnp.isfinite(loss)
    for leaf in jax.tree.leaves((params, opt_state)):
      finite &= checkpoints.leaf_finite(leaf)
    return new_state, {"loss": loss, "lr": lr_fn(state.step), "finite": finite}

  return train_step


def jit_train_step(train_step, mesh):
  """jit over the mesh: state replicated, batch split on 'data', old state donated."""
  repl = NamedSharding(mesh, P())
  data = NamedSharding(mesh, P(sharding.DATA_AXIS))
  return jax.jit(train_step, in_shardings=(repl, data, repl), out_shardings=(repl, repl),
                 donate_argnums=0, compiler_options=sharding.compiler_options(mesh))


class _PreemptionWatch:
  """Whether a preemption notice (SIGTERM: TPU/GCE preemption, Slurm) has come.

  One process: a SIGTERM handler sets a flag (installed only from the main thread, the old
  handler put back on exit). Several: JAX's preemption sync manager (started by
  jax.distributed.initialize) agrees on one step for every host to save at.
  """

  def __init__(self):
    self._flag = threading.Event()
    self._old = None

  def __enter__(self):
    if jax.process_count() == 1 and threading.current_thread() is threading.main_thread():
      self._old = signal.signal(signal.SIGTERM, lambda *_: self._flag.set())
    return self

  def __exit__(self, *exc):
    if self._old is not None:
      signal.signal(signal.SIGTERM, self._old)

  def requested(self, step: int) -> bool:
    if jax.process_count() > 1:
      return multihost_utils.reached_preemption_sync_point(step)
    return self._flag.is_set()


def train_and_evaluate(config, workdir: str) -> TrainState:
  """Train until `training.n_iters` steps, resuming from the newest checkpoint in workdir.

  Writes checkpoints/ (orbax, the last `training.keep_checkpoints`), samples/*.png at each
  snapshot when `training.snapshot_sampling`, metrics.jsonl, and TensorBoard events when
  TensorFlow is installed; with `eval.after_training`, ends with the eval job on the last
  checkpoint in those features (eval/<step>.json).
  """
  validate_config(config)
  # Data first: a bad dataset setting fails before anything is created in workdir.
  bad = data.BadImageCounter()
  dataset = data.make_train_dataset(config, process_index=jax.process_index(),
                                    process_count=jax.process_count(), counter=bad)
  batches = iter(dataset)
  mesh = sharding.data_mesh()
  is_main = jax.process_index() == 0
  ckpt = checkpoints.Checkpointer(workdir, config, keep=config.training.keep_checkpoints)
  model, tx, target = abstract_state(config, mesh)
  state = ckpt.restore_latest(target, batches, quarantine=True)
  if state is None:
    state = fresh_state(config, model, tx, mesh)
  start = int(state.step)
  if start and is_main:
    print(f"Resuming from step {start} in {workdir}.")
  train_step = jit_train_step(make_train_step(config, model, tx), mesh)
  batch_sharding = NamedSharding(mesh, P(sharding.DATA_AXIS))
  sample_fn = None
  progress = generate.LevelProgress()
  method = methods.get_method(config, model)
  if config.training.snapshot_sampling:
    padded, n_samples = generate.padded_batch(config)
    sample_fn = generate.jit_sample_fn(
        generate.make_sample_fn(padded, model, progress, batch_sharding, method=method), mesh)
  keys = rng_keys(config)
  needs_labels = method.label_dim > 0
  writer = metrics.MetricsWriter(workdir, is_main, resume_step=start)
  t = config.training

  def check_finite(step, step_metrics):
    if not bool(step_metrics["finite"]):
      last = ckpt.latest_step()
      raise checkpoints.NonFiniteError(
          f"training went non-finite at step {step} (loss {float(step_metrics['loss']):.6g}; "
          "NaN or Inf in the loss, the parameters or the optimizer state); stopped there, "
          "nothing non-finite saved. Last good checkpoint: "
          + (f"step {last} in {ckpt.directory}." if last is not None else "none."))

  bar = tqdm.tqdm(total=t.n_iters, initial=start, desc="train", unit="step",
                  disable=not is_main, dynamic_ncols=True)
  previous = None  # the last step's metrics, checked once the next step is dispatched
  try:
    with _PreemptionWatch() as preemption:
      for step in range(start, t.n_iters):
        host = next(batches)
        batch = sharding.global_batch(host["image"], batch_sharding, t.batch_size)
        if needs_labels:
          batch = {"image": batch}
          lab = host["label"]
          if lab.min() < 0 or lab.max() >= method.label_dim:
            raise ValueError(f"config.model.label_dim={method.label_dim} needs class labels "
                             f"in [0, {method.label_dim}); the data gave labels from "
                             f"{lab.min()} to {lab.max()} (-1: the source has none).")
          batch["label"] = sharding.global_batch(host["label"].astype(np.int32),
                                                 batch_sharding, t.batch_size)
        state, step_metrics = train_step(state, batch, keys["train"])
        done = step + 1
        # Checking the step before keeps one step in flight: the host prepares the next
        # batch while the device computes.
        if previous is not None:
          check_finite(*previous)
        previous = (done, step_metrics)
        bar.update(1)
        if done % t.log_freq == 0 or done == t.n_iters:
          check_finite(done, step_metrics)
          loss = float(step_metrics["loss"])
          writer.write(done, {"loss": loss, "lr": float(step_metrics["lr"])})
          bar.set_postfix(loss=f"{loss:.4g}")
        preempted = preemption.requested(done)
        if done % t.snapshot_freq == 0 or done == t.n_iters or preempted:
          check_finite(done, step_metrics)
          ckpt.save(done, state, batches)
        if preempted:
          writer.flush()
          if is_main:
            print(f"Preempted (SIGTERM): saved step {done} in {ckpt.directory}; the same "
                  "command resumes from it.")
          return state
        if sample_fn is not None and (done % t.snapshot_freq == 0 or done == t.n_iters):
          # to_host gathers across hosts, so every host calls it; only host 0 writes.
          samples = generate.with_progress_bar(
              progress, generate.progress_total(config, method), f"sample@{done}", is_main,
              lambda: sharding.to_host(sample_fn(state.ema_params, keys["sample"])))[:n_samples]
          if is_main:
            images.save_grid(samples, os.path.join(workdir, "samples",
                                                   f"image_grid_{done}.png"))
  finally:
    # Whatever ends the loop, a save in flight is finished, not cut off at exit.
    bar.close()
    ckpt.wait()
  writer.flush()
  if bad.count and is_main:
    print(f"Skipped {bad.count} bad image(s) (config.data.skip_bad); the first: {bad.first}")
  if config.eval.after_training:
    from score_jax import evaluate  # pylint: disable=g-import-not-at-top
    evaluate.evaluate(evaluate.after_training_config(config), workdir)
  return state


