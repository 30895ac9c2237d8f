"""Training: the jit-compiled data-parallel train step and the training loop, for every
method (its loss comes from the `build.Built` the loop is given)."""

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

from score_jax import checkpoints, data, generate, host, images, metrics, optim, sharding
from score_jax.state import TrainState, abstract_state, fresh_state


def make_train_step(loss_fn, tx, lr_fn, rounds: int = 1) -> Callable:
  """The pure step (state, batch, base_key) -> (state, {'loss', 'lr', 'finite'}), where
  batch is images [B, H, W, C] in [0, 1] or the pipeline's dict {'image', 'label'}, 'lr' is
  the learning rate this step used and 'finite' is False when the loss or any array of the
  new state holds NaN or Inf. `loss_fn` is a `Method.loss_fn`, `tx` the optimizer, `lr_fn`
  its schedule (reported only), `rounds` the gradient-accumulation passes (`TrainSpec`).

  The step's randomness is fold_in(base_key, state.step): no RNG state to carry, and the
  same for any device count. With `accumulation_rounds` > 1 the batch is taken in rounds
  (row r * rounds + j in round j, so every device keeps its own rows) and the gradients
  averaged; each round's loss gets the rows' places in the batch (`sample_ids`).
  """
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


def train_step_of(built) -> Callable:
  """`make_train_step` for a `build.Built`."""
  return make_train_step(built.method.loss_fn, built.optimizer, built.lr_fn, built.train.rounds)


def _labelled_batch(host, batch_sharding, batch_size: int, label_dim: int):
  """The global batch of a host's rows: images, or {'image', 'label'} for a conditional
  network (its labels checked against label_dim)."""
  batch = sharding.global_batch(host["image"], batch_sharding, batch_size)
  if not label_dim:
    return batch
  lab = host["label"]
  if lab.min() < 0 or lab.max() >= label_dim:
    raise ValueError(f"config.model.label_dim={label_dim} needs class labels in [0, "
                     f"{label_dim}); the data gave labels from {lab.min()} to {lab.max()} "
                     "(-1: the source has none).")
  return {"image": batch, "label": sharding.global_batch(lab.astype(np.int32), batch_sharding,
                                                         batch_size)}


class _Snapshots:
  """The sample grids written at each snapshot: one sampler compiled for the run."""

  def __init__(self, built, mesh, batch_sharding, workdir, is_main):
    self.progress = generate.LevelProgress()
    self.n = built.sampler.options.batch_size
    self.fn = generate.jit_sample_fn(generate.make_sample_fn(
        built.method, built.sampler, generate.padded_size(self.n, mesh),
        built.image_shape, self.progress, batch_sharding), mesh)
    self.total = generate.progress_total(built.method, built.sampler)
    self.key, self.workdir, self.is_main = built.rng_keys["sample"], workdir, is_main

  def write(self, state, step: int):
    # to_host gathers across hosts, so every host calls it; only host 0 writes.
    samples = generate.with_progress_bar(
        self.progress, self.total, f"sample@{step}", self.is_main,
        lambda: sharding.to_host(self.fn(state.ema_params, self.key, 0)))[:self.n]
    if self.is_main:
      images.save_grid(samples, os.path.join(self.workdir, "samples", f"image_grid_{step}.png"))


class _PosthocSnapshots:
  """EDM2's power-EMA snapshots: workdir/posthoc/<step>, every one kept, checksummed."""

  def __init__(self, built, workdir):
    from score_jax import posthoc_ema  # pylint: disable=g-import-not-at-top
    self.ckpt = checkpoints.Checkpointer(
        workdir, posthoc_ema.snapshot_signature(built.signature, built.posthoc.sigma_rels),
        keep=None, subdir=posthoc_ema.SNAPSHOT_DIR)

  def save(self, step: int, state):
    if step not in self.ckpt.all_steps():  # a resumed run may pass a saved step again
      self.ckpt.save(step, {"emas": optim.power_emas_of(state.opt_state)})


def _check_finite(ckpt, step, step_metrics):
  if not bool(step_metrics["finite"]):
    last = ckpt.latest_step()
    raise checkpoints.NonFiniteError(
        f"training went non-finite at step {step} (loss {float(step_metrics['loss']):.6g}; "
        "NaN or Inf in the loss, the parameters or the optimizer state); stopped there, "
        "nothing non-finite saved. Last good checkpoint: "
        + (f"step {last} in {ckpt.directory}." if last is not None else "none."))


def train_and_evaluate(built, workdir: str, features_fn=None) -> TrainState:
  """Train the `build.Built` run until `train.n_iters` steps, resuming from the newest
  checkpoint in workdir.

  Writes checkpoints/ (orbax, the last `train.keep_checkpoints`), samples/*.png at each
  snapshot when `train.snapshot_sampling`, metrics.jsonl, and TensorBoard events when
  TensorFlow is installed; with `eval_after_training`, ends with the eval job on the last
  checkpoint in those features (eval/<step>.json; `features_fn` replaces their network).
  """
  t = built.train
  # Data first: a bad dataset setting fails before anything is created in workdir.
  bad = data.BadImageCounter()
  dataset = data.make_train_dataset(built.data, process_index=jax.process_index(),
                                    process_count=jax.process_count(), counter=bad)
  batches = iter(dataset)
  mesh = sharding.data_mesh()
  is_main = jax.process_index() == 0
  ckpt = checkpoints.Checkpointer(workdir, built.signature, keep=t.keep_checkpoints)
  snapshots_ph = _PosthocSnapshots(built, workdir) if built.posthoc.sigma_rels else None
  state = ckpt.restore_latest(abstract_state(built, mesh), batches, quarantine=True)
  if state is None:
    state = fresh_state(built, mesh)
  start = int(state.step)
  if start and is_main:
    print(f"Resuming from step {start} in {workdir}.")
  train_step = jit_train_step(train_step_of(built), mesh)
  batch_sharding = NamedSharding(mesh, P(sharding.DATA_AXIS))
  snapshots = (_Snapshots(built, mesh, batch_sharding, workdir, is_main)
               if t.snapshot_sampling else None)
  train_key = built.rng_keys["train"]
  writer = metrics.MetricsWriter(workdir, is_main, resume_step=start)
  bar = tqdm.tqdm(total=t.n_iters, initial=start, desc="train", unit="step",
                  disable=not is_main, dynamic_ncols=True)
  previous = None  # the last step's metrics, checked once the next step is dispatched
  try:
    with _PreemptionWatch() as preemption:
      for step in range(start, t.n_iters):
        batch = _labelled_batch(next(batches), batch_sharding, t.batch_size,
                                built.method.label_dim)
        if step == start:  # compiled ahead, so the compiler's heap is freed before it runs
          train_step = host.compile_then_release(train_step, state, batch, train_key)
        state, step_metrics = train_step(state, batch, train_key)
        done = step + 1
        # Checking the step before keeps one step in flight: the host prepares the next
        # batch while the device computes.
        if previous is not None:
          _check_finite(ckpt, *previous)
        previous = (done, step_metrics)
        bar.update(1)
        if done % t.log_freq == 0 or done == t.n_iters:
          _check_finite(ckpt, done, step_metrics)
          loss = float(step_metrics["loss"])
          writer.write(done, {"loss": loss, "lr": float(step_metrics["lr"])})
          bar.set_postfix(loss=f"{loss:.4g}")
        preempted = preemption.requested(done)
        snapshot = done % t.snapshot_freq == 0 or done == t.n_iters
        if snapshot or preempted:
          _check_finite(ckpt, done, step_metrics)
          ckpt.save(done, state, batches)
        if snapshots_ph is not None and (done % built.posthoc.snapshot_freq == 0
                                         or done == t.n_iters):
          snapshots_ph.save(done, state)
        if preempted:
          writer.flush()
          if is_main:
            print(f"Preempted (SIGTERM): saved step {done} in {ckpt.directory}; the same "
                  "command resumes from it.")
          return state
        if snapshots is not None and snapshot:
          snapshots.write(state, done)
  finally:
    # Whatever ends the loop, a save in flight is finished, not cut off at exit.
    bar.close()
    ckpt.wait()
    if snapshots_ph is not None:
      snapshots_ph.ckpt.wait()
  writer.flush()
  if bad.count and is_main:
    print(f"Skipped {bad.count} bad image(s) (config.data.skip_bad); the first: {bad.first}")
  if built.eval_after_training is not None:
    from score_jax.eval import fid  # pylint: disable=g-import-not-at-top
    fid.evaluate(built, workdir, features_fn=features_fn, spec=built.eval_after_training)
  return state
