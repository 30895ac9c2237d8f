"""`--config.eval.metric=bpd`: DDPM's variational bound in bits/dim on a dataset, resumable."""

import os

import jax
import numpy as np
import tqdm
from jax.sharding import NamedSharding, PartitionSpec as P

from score_jax import checkpoints, data, likelihood, sharding
from score_jax.eval import shards


def evaluate_bpd(built, workdir: str) -> dict:
  """DDPM's bound (score_jax.likelihood) on the images of split `eval.bpd_split` (the first
  `eval.bpd_images`, 0 = all), for the newest checkpoint's EMA weights of a `build.Built`,
  with `sampling.variance` and `clip_denoised`.

  Batches of `eval.batch_size` images (padded to the device count) are split over every
  device of every host (each host reads its own rows); each batch's per-image numbers go to
  eval/<step>/bpd/ as resumable shards; image i's noise depends on (eval.seed, i) only.
  Writes eval/<step>_bpd.json: the mean bits/dim, its standard error, and the three parts.
  """
  e, s, method = built.eval, built.sampler.options, built.method
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
  key = jax.random.PRNGKey(e.seed)

  def bound(params, x01, ids):
    return likelihood.ddpm_bpd(method.eps_fn(params), 2.0 * x01 - 1.0, key, method.betas,
                               s.variance, s.clip_denoised, sample_ids=ids)

  rows = NamedSharding(mesh, P(sharding.DATA_AXIS))
  jitted = jax.jit(bound, in_shardings=(NamedSharding(mesh, P()), rows, rows),
                   out_shardings=rows, compiler_options=sharding.compiler_options(mesh))
  n_shards = -(-n // batch)
  tag = shards.settings_tag(built.sampler.settings, "bpd", e.bpd_split, e.seed)
  shard_dir = os.path.join(shards.eval_dir(workdir), str(step), "bpd", tag)
  is_main = jax.process_index() == 0
  if is_main:
    os.makedirs(shard_dir, exist_ok=True)
  path_of = lambda i: os.path.join(shard_dir, f"shard_{i:05d}.npz")
  per_host = batch // n_proc
  for i in tqdm.tqdm(shards.missing_shards(path_of, n_shards), desc=f"bpd@{step}",
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
  return _write_result(built, workdir, step, n, source, params,
                       [np.load(path_of(i)) for i in range(n_shards)])


def padded_batch(batch: int, n_devices: int, n_processes: int) -> int:
  """`batch` rounded up so that it splits over the devices and the hosts."""
  unit = int(np.lcm(n_devices, n_processes))
  return batch + (-batch % unit)


def _write_result(built, workdir, step, n, source, params, loaded) -> dict:
  e, s = built.eval, built.sampler.options
  parts = {k: np.concatenate([f[k] for f in loaded]).astype(np.float64)
           for k in ("total", "prior", "decoder", "kl")}
  result = dict(step=step, bpd=float(parts["total"].mean()),
                bpd_stderr=float(parts["total"].std(ddof=1) / np.sqrt(n)) if n > 1 else None,
                prior=float(parts["prior"].mean()), decoder=float(parts["decoder"].mean()),
                kl=float(parts["kl"].mean()), num_images=n, split=e.bpd_split,
                source=repr(source), seed=e.seed, variance=s.variance,
                clip_denoised=s.clip_denoised, num_timesteps=len(built.method.betas),
                weights_sha256=shards.sha256_of_params(params))
  out_path = os.path.join(shards.eval_dir(workdir), f"{step}_bpd.json")
  shards.atomic_json(out_path, result)
  print(f"step {step}: {result['bpd']:.4f} bits/dim (L_T {result['prior']:.4f}, "
        f"L_1..L_T-1 {result['kl']:.4f}, L_0 {result['decoder']:.4f}) on {n} images of "
        f"{e.bpd_split!r} -> {out_path}")
  return result
