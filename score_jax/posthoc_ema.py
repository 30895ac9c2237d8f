"""Post-hoc EMA (EDM2, Karras et al. 2024, Sec. 3): train with a few power-function EMAs,
store them now and then, and after training reconstruct the EMA of any length.

A power-function EMA with exponent gamma, updated after optimizer step t (t = 1 for the
first) as ema = beta_t ema + (1 - beta_t) params with beta_t = (1 - 1/t)^(gamma + 1), holds
at step T the average sum_t c(t) params_t with the exact weights

    c(t) = (1 - ((t - 1) / t)^(gamma + 1)) (t / T)^(gamma + 1),   t = 1..T

(the product of the betas after t telescopes to (t / T)^(gamma + 1)). Its relative width
sigma_rel (the standard deviation of the weights over T) fixes gamma (`sigma_rel_to_gamma`).
Any target (T', gamma') is reconstructed as the sum_i w_i ema_i of stored snapshots whose
weights w solve the least-squares problem over these weight sequences (EDM2 Alg. 3, here
with the exact discrete weights rather than their continuous limit, so a stored pair is
reproduced exactly).
"""

import numpy as np


def sigma_rel_to_gamma(sigma_rel: float) -> float:
  """gamma of the power EMA whose relative standard deviation is sigma_rel (EDM2 Alg. 2):
  the largest real root of gamma^3 + 7 gamma^2 + (16 - t) gamma + (12 - t), t = sigma_rel^-2."""
  if not 0 < sigma_rel < 12 ** -0.5:
    raise ValueError(f"sigma_rel={sigma_rel!r}: expected 0 < sigma_rel < {12 ** -0.5:.4f} "
                     "(gamma > 0).")
  t = float(sigma_rel) ** -2
  return float(np.roots([1.0, 7.0, 16.0 - t, 12.0 - t]).real.max())


def power_weights(step: int, gamma: float, length: int) -> np.ndarray:
  """c(t) for t = 1..length of the power EMA at `step` (0 beyond it), float64 [length]."""
  t = np.arange(1, length + 1, dtype=np.float64)
  with np.errstate(divide="ignore"):  # t = 1: log1p(-1), set below
    c = -np.expm1((gamma + 1.0) * np.log1p(-1.0 / t)) * np.exp((gamma + 1.0) * np.log(t / step))
  c[0] = step ** -(gamma + 1.0)  # t = 1: beta_1 = 0, the average starts at params_1
  c[t > step] = 0.0
  return c


def _gram(steps, gammas, other_steps, other_gammas, chunk: int = 1 << 16) -> np.ndarray:
  """[len(steps), len(other_steps)] inner products sum_t c_i(t) c_j(t), summed in chunks of
  t so that memory stays bounded for long runs."""
  length = int(max(max(steps), max(other_steps)))
  out = np.zeros((len(steps), len(other_steps)))
  for start in range(0, length, chunk):
    stop = min(length, start + chunk)

    def rows(ss, gs):
      return np.stack([power_weights(s, g, stop)[start:stop] for s, g in zip(ss, gs)])

    out += rows(steps, gammas) @ rows(other_steps, other_gammas).T
  return out


def solve_weights(snapshot_steps, snapshot_sigma_rels, target_step: int,
                  target_sigma_rel: float) -> np.ndarray:
  """float64 [n] weights, one per snapshot (the pairs snapshot_steps[i], snapshot_sigma_rels[i]),
  with sum_i w_i ema_i the best reconstruction of the power EMA of `target_sigma_rel` at
  `target_step`: least squares over the EMAs' weights on each training step."""
  steps = np.asarray(snapshot_steps, np.int64).ravel()
  rels = np.asarray(snapshot_sigma_rels, np.float64).ravel()
  if steps.shape != rels.shape or not len(steps):
    raise ValueError(f"{len(steps)} snapshot steps and {len(rels)} sigma_rels: expected one "
                     "pair per snapshot, at least one.")
  if steps.min() < 1 or target_step < 1:
    raise ValueError(f"steps must be >= 1; got snapshots at {steps.min()} and a target at "
                     f"{target_step}.")
  gammas = [sigma_rel_to_gamma(r) for r in rels]
  gram = _gram(steps, gammas, steps, gammas)
  rhs = _gram(steps, gammas, [int(target_step)], [sigma_rel_to_gamma(target_sigma_rel)])
  # Scaled to unit diagonal: the snapshots' norms differ by orders of magnitude.
  d = np.sqrt(np.diag(gram))
  w = np.linalg.lstsq(gram / np.outer(d, d), rhs[:, 0] / d, rcond=1e-12)[0] / d
  return w.astype(np.float64)


# --- training and the reconstruction job ----------------------------------------------------

SNAPSHOT_DIR = "posthoc"


def snapshot_signature(signature: dict, sigma_rels) -> dict:
  """A run's model signature plus the sigma_rels its snapshots hold, in that order."""
  return dict(signature, **{"posthoc.sigma_rels": [float(r) for r in sigma_rels]})


def reconstruct(built, workdir: str):
  """`--mode=posthoc_ema`: the power EMA of `posthoc.sigma_rel` at `posthoc.step` (0: the
  newest snapshot) from the snapshots in workdir/posthoc, written as the EMA of a TrainState
  checkpoint in the empty workdir `posthoc.out` (at that step; its raw parameters and Adam
  state are the training checkpoint's of that step when kept, else the newest one's), so
  that --mode=sample and --mode=eval read it. Returns (step, the snapshots' weights)."""
  import jax  # pylint: disable=g-import-not-at-top
  from score_jax import checkpoints, optim, sharding  # pylint: disable=g-import-not-at-top
  spec = built.posthoc
  mesh = sharding.data_mesh()
  ckpt, target = checkpoints.open_trained(workdir, built, mesh)
  snaps = checkpoints.Checkpointer(workdir, snapshot_signature(built.signature, spec.sigma_rels),
                                   create=False, subdir=SNAPSHOT_DIR)
  kept = snaps.all_steps()
  step = spec.step or (kept[-1] if kept else 0)
  use = [s for s in kept if s <= step]
  if not use:
    raise FileNotFoundError(f"no post-hoc EMA snapshot at or before step {step} in "
                            f"{snaps.directory}; train with training.posthoc_sigma_rels set.")
  out = checkpoints.Checkpointer(spec.out, built.signature, create=False)
  if out.latest_step() is not None:
    raise FileExistsError(f"{out.directory} already holds checkpoints; give an empty "
                          "--config.posthoc.out.")
  steps = np.repeat(use, len(spec.sigma_rels))
  rels = np.tile(spec.sigma_rels, len(use))
  w = solve_weights(steps, rels, step, spec.sigma_rel)
  ema_target = {"emas": tuple(target.params for _ in spec.sigma_rels)}
  total = None
  for i, s in enumerate(use):
    emas = snaps.restore(s, ema_target)["emas"]
    for j, e in enumerate(emas):
      wk = float(w[i * len(spec.sigma_rels) + j])
      total = jax.tree.map(lambda a: wk * a, e) if total is None else jax.tree.map(
          lambda t_, a: t_ + wk * a, total, e)
  base = ckpt.restore(step if step in ckpt.all_steps() else ckpt.all_steps()[-1], target)
  state = base.replace(step=jax.device_put(np.asarray(step, np.int32), base.step.sharding),
                       opt_state=optim.with_ema(base.opt_state, total))
  writer = checkpoints.Checkpointer(spec.out, built.signature, keep=built.train.keep_checkpoints)
  writer.save(step, state)
  writer.wait()
  print(f"Post-hoc EMA sigma_rel {spec.sigma_rel} at step {step} from {len(use)} snapshot(s) "
        f"x {len(spec.sigma_rels)} EMA(s) -> {writer.directory}")
  return step, w


def run(built, workdir: str):
  """The `--mode=posthoc_ema` job."""
  return reconstruct(built, workdir)
