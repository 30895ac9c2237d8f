"""Likelihood evals on a dataset, in bits/dim, resumable: `--config.eval.metric=bpd` (DDPM's
variational bound) and `bpd_ode` (the probability-flow ODE's exact likelihood, any model)."""

import math
import os

import jax
import numpy as np
import tqdm
from jax.sharding import NamedSharding, PartitionSpec as P

from score_jax import checkpoints, data, likelihood, sharding
from score_jax.eval import shards


def padded_batch(batch: int, n_devices: int, n_processes: int) -> int:
  """`batch` rounded up so that it splits over the devices and the hosts."""
  unit = int(np.lcm(n_devices, n_processes))
  return batch + (-batch % unit)


def _score_dataset(built, workdir: str, kind: str, make_fn, tag_parts) -> dict:
  """The newest checkpoint's EMA weights scored image by image on `eval.bpd_split` (the first
  `eval.bpd_images`, 0 = all): batches of `eval.batch_size` (padded to the devices), each
  host reading its own rows, per-image results [B] from `make_fn(params)(params, x01, ids)`
  saved as resumable shards in eval/<step>/<kind>/<tag>/. Returns (step, n, source,
  params, {name: float64 [n]}) on process 0, None elsewhere."""
  e = built.eval
  mesh = sharding.data_mesh()
  n_proc = jax.process_count()
  batch = padded_batch(e.batch_size, mesh.devices.size, n_proc)
  source = data.make_source(built.data, e.bpd_split)
  n = len(source) if not e.bpd_images else e.bpd_images
  if not 1 <= n <= len(source):
    raise ValueError(f"config.eval.bpd_images={e.bpd_images}; split {e.bpd_split!r} has "
                     f"{len(source)} images.")
  ckpt, target = checkpoints.open_trained(workdir, built, mesh)
  step = ckpt.latest_step()
  params = checkpoints.restore_finite_params(ckpt, step, target)
  rows = NamedSharding(mesh, P(sharding.DATA_AXIS))
  jitted = jax.jit(make_fn(params), in_shardings=(NamedSharding(mesh, P()), rows, rows),
                   out_shardings=rows, compiler_options=sharding.compiler_options(mesh))
  n_shards = -(-n // batch)
  tag = shards.settings_tag(built.sampler.settings, kind, e.bpd_split, e.seed, *tag_parts)
  shard_dir = os.path.join(shards.eval_dir(workdir), str(step), kind, tag)
  is_main = jax.process_index() == 0
  if is_main:
    os.makedirs(shard_dir, exist_ok=True)
  path_of = lambda i: os.path.join(shard_dir, f"shard_{i:05d}.npz")
  per_host = batch // n_proc
  for i in tqdm.tqdm(shards.missing_shards(path_of, n_shards), desc=f"{kind}@{step}",
                     unit="batch", disable=not is_main, leave=False):
    # The last batch is filled up with image 0 again; those rows are dropped.
    ids = np.arange(i * batch, (i + 1) * batch)
    ids = np.where(ids < n, ids, 0)
    mine = ids[jax.process_index() * per_host:(jax.process_index() + 1) * per_host]
    x = data.load_images(built.data, e.bpd_split, indices=mine, source=source)
    out = jitted(params, sharding.global_batch(x, rows, batch),
                 sharding.global_batch(mine.astype(np.int32), rows, batch))
    out = {k: sharding.to_host(v)[:min(batch, n - i * batch)] for k, v in out.items()}
    if is_main:
      shards.atomic_savez(path_of(i), **out)
  if not is_main:
    return None
  loaded = [np.load(path_of(i)) for i in range(n_shards)]
  parts = {k: np.concatenate([f[k] for f in loaded]).astype(np.float64) for k in loaded[0].files}
  return step, n, source, params, parts


def _write(built, workdir, name: str, result: dict, line: str) -> dict:
  out_path = os.path.join(shards.eval_dir(workdir), f"{result['step']}_{name}.json")
  shards.atomic_json(out_path, result)
  print(f"{line} -> {out_path}")
  return result


def _summary(step, n, source, params, total, e) -> dict:
  return dict(step=step, bpd=float(total.mean()),
              bpd_stderr=float(total.std(ddof=1) / np.sqrt(n)) if n > 1 else None,
              num_images=n, split=e.bpd_split, source=repr(source), seed=e.seed,
              weights_sha256=shards.sha256_of_params(params))


def evaluate_bpd(built, workdir: str) -> dict:
  """DDPM's bound (score_jax.likelihood.ddpm_bpd) with `sampling.variance` and
  `clip_denoised`; image i's noise depends on (eval.seed, i) only. Writes
  eval/<step>_bpd.json: the mean bits/dim, its standard error, and the three parts."""
  e, s, method = built.eval, built.sampler.options, built.method
  key = jax.random.PRNGKey(e.seed)

  def make_fn(_):
    return lambda params, x01, ids: likelihood.ddpm_bpd(
        method.eps_fn(params), 2.0 * x01 - 1.0, key, method.betas, s.variance,
        s.clip_denoised, sample_ids=ids)

  got = _score_dataset(built, workdir, "bpd", make_fn, ())
  if got is None:
    return None
  step, n, source, params, parts = got
  result = _summary(step, n, source, params, parts["total"], e)
  result.update(prior=float(parts["prior"].mean()), decoder=float(parts["decoder"].mean()),
                kl=float(parts["kl"].mean()), variance=s.variance,
                clip_denoised=s.clip_denoised, num_timesteps=len(method.betas))
  return _write(built, workdir, "bpd", result,
                f"step {step}: {result['bpd']:.4f} bits/dim (L_T {result['prior']:.4f}, "
                f"L_1..L_T-1 {result['kl']:.4f}, L_0 {result['decoder']:.4f}) on {n} images "
                f"of {e.bpd_split!r}")


def evaluate_bpd_ode(built, workdir: str) -> dict:
  """The probability-flow ODE's likelihood (likelihood.ode_nll) of uniformly dequantised
  images ((255 x + u) / 256, u drawn per image from (eval.seed, i)), in [-1, 1], between the
  network's sigma range clipped to [eval.ode_sigma_min, eval.ode_sigma_max], with the
  Hutchinson trace (`eval.ode_trace`: rademacher | gaussian) or the exact one ('exact').
  Writes eval/<step>_bpd_ode.json."""
  e, method = built.eval, built.method
  den = method.denoiser(None)
  lo, hi = max(e.ode_sigma_min, den.sigma_min), min(e.ode_sigma_max, den.sigma_max)
  if not lo < hi:
    raise ValueError(f"config.eval.ode_sigma_min={e.ode_sigma_min} and ode_sigma_max="
                     f"{e.ode_sigma_max} leave no range in the network's "
                     f"[{den.sigma_min:.4g}, {den.sigma_max:.4g}].")
  base = jax.random.PRNGKey(e.seed)
  dim = int(np.prod(built.image_shape))

  def make_fn(_):
    def nll(params, x01, ids):
      keys = jax.vmap(lambda i: jax.random.fold_in(base, i))(ids)
      u = jax.vmap(lambda k: jax.random.uniform(k, x01.shape[1:], x01.dtype))(keys)
      y = 2.0 * (255.0 * x01 + u) / 256.0 - 1.0
      out = likelihood.ode_nll(method.denoiser(params).fn, y, lo, hi,
                               jax.random.fold_in(base, 0x0de), e.ode_trace == "exact",
                               e.ode_rtol, e.ode_atol,
                               probe="rademacher" if e.ode_trace == "exact" else e.ode_trace)
      return {"nll": out, "bpd": likelihood.bits_per_dim(out, dim)}
    return nll

  got = _score_dataset(built, workdir, "bpd_ode", make_fn,
                       (lo, hi, e.ode_trace, e.ode_rtol, e.ode_atol))
  if got is None:
    return None
  step, n, source, params, parts = got
  result = _summary(step, n, source, params, parts["bpd"], e)
  result.update(nll_nats=float(parts["nll"].mean()), sigma_min=lo, sigma_max=hi,
                trace=e.ode_trace, rtol=e.ode_rtol, atol=e.ode_atol,
                dequantization="uniform, (255 x + u) / 256", offset_bits=math.log2(128))
  return _write(built, workdir, "bpd_ode", result,
                f"step {step}: {result['bpd']:.4f} bits/dim (PF-ODE, {e.ode_trace} trace) on "
                f"{n} images of {e.bpd_split!r}")
