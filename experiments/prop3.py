"""NCSNv2 Proposition 3: the variance after each level of annealed Langevin, measured
against Eq. 4, for N(0, sigma_i^2 I) data in high dimension with the exact score.

  python experiments/prop3.py --out=prop3.png

Eq. 4 assumes each level starts exactly at N(0, sigma_{i-1}^2 I). The sampler starts level
i from wherever level i - 1 ended, so the script also prints the exact recursion
v_i = (1 - a)^(2T) v_{i-1} + c (1 - (1 - a)^(2T)) sigma_i^2 (a = eps / sigma_L^2,
c = 2 eps / (sigma_L^2 (1 - (1 - a)^2))), which equals Eq. 4 when v_{i-1} = sigma_{i-1}^2.
Defaults: CIFAR-10's dimension and Table 4 settings (sigma 50 to 0.01, L = 232, T = 5,
eps = 6.2e-6).
"""

import argparse
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from experiments import figures  # pylint: disable=g-import-not-at-top
from score_jax import noise, samplers  # pylint: disable=g-import-not-at-top


def run(dim=3072, n=64, sigma_1=50.0, sigma_end=0.01, levels=232, n_steps_each=5,
        eps=6.2e-6, seed=0):
  sigmas = noise.geometric_sigmas(sigma_1, sigma_end, levels).astype(np.float64)
  gamma = sigmas[0] / sigmas[1]
  sig = jnp.asarray(sigmas, jnp.float32)
  key = jax.random.PRNGKey(seed)
  # Start at N(0, (gamma sigma_1)^2 I), the level "before" the first, as Eq. 4 assumes.
  x0 = jax.random.normal(key, (n, dim)) * gamma * sigmas[0]
  _, states = samplers.annealed_langevin(lambda x, i: -x / sig[i] ** 2, x0, sig,
                                         n_steps_each, eps, key, snapshot_every=1)
  measured = np.asarray(jnp.mean(states.astype(jnp.float32) ** 2, axis=(1, 2))) / sigmas**2
  eq4 = float(noise.langevin_variance_ratio(eps, n_steps_each, gamma, sigma_end))
  a = eps / sigma_end**2
  decay = (1 - a) ** (2 * n_steps_each)
  c = 2 * eps / (sigma_end**2 * (1 - (1 - a) ** 2))
  v, recursion = (gamma * sigmas[0]) ** 2, []
  for s in sigmas:
    v = decay * v + c * (1 - decay) * s**2
    recursion.append(v / s**2)
  return dict(measured=measured, eq4=eq4, recursion=np.asarray(recursion), sigmas=sigmas)


def plot(r, path):
  plt = figures.pyplot()
  fig, ax = plt.subplots(figsize=(7, 4))
  idx = np.arange(1, len(r["sigmas"]) + 1)
  ax.plot(idx, r["measured"], ".", ms=3, label="measured s_T^2 / sigma_i^2")
  ax.plot(idx, r["recursion"], "-", label="exact recursion")
  ax.axhline(r["eq4"], color="k", ls="--", label=f"Eq. 4 = {r['eq4']:.4f}")
  ax.set_xlabel("level i")
  ax.set_ylabel("variance ratio")
  ax.legend()
  figures.save(fig, path)


def main():
  p = argparse.ArgumentParser()
  p.add_argument("--out", default="prop3.png")
  args = p.parse_args()
  r = run()
  m = r["measured"]
  print(f"Eq. 4: {r['eq4']:.4f}")
  print(f"measured after level 1: {m[0]:.4f}; levels 2-{len(m)}: mean {m[1:].mean():.4f}, "
        f"min {m[1:].min():.4f}, max {m[1:].max():.4f}")
  print(f"exact recursion after level 1: {r['recursion'][0]:.4f}, at level {len(m)}: "
        f"{r['recursion'][-1]:.4f}")
  print(f"max |measured - recursion|: {np.abs(m - r['recursion']).max():.4f}")
  plot(r, args.out)
  print(f"wrote {args.out}")


if __name__ == "__main__":
  main()
