"""NCSNv2 Table 4 recomputed with Techniques 2 and 4, beside the paper's values.

  python experiments/noise_table.py --out=noise_table.png

For each NCSNv2 row: sigma_1 as the paper gives it, L from Technique 2 (coverage 0.5) for
the data dimension, the coverage the paper's L achieves, eps from Technique 4 for the paper's
L and T, and Eq. 4's variance ratio at both eps. The figure plots Eq. 4 against eps.
"""

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from experiments import figures  # pylint: disable=g-import-not-at-top
from score_jax import noise  # pylint: disable=g-import-not-at-top

# dataset, resolution, sigma_1, L, T, eps as printed in Table 4.
TABLE_4 = (
    ("CIFAR-10", 32, 50.0, 232, 5, 6.2e-6),
    ("CelebA", 64, 90.0, 500, 5, 3.3e-6),
    ("LSUN church_outdoor", 96, 140.0, 788, 4, 4.9e-6),
    ("LSUN bedroom/tower", 128, 190.0, 1086, 3, 1.8e-6),
    ("FFHQ", 256, 348.0, 2311, 3, 0.9e-7),
)
SIGMA_END = 0.01


def compute(rows=TABLE_4):
  out = []
  for name, res, s1, levels, t, eps_paper in rows:
    dim = res * res * 3
    sigmas = noise.geometric_sigmas(s1, SIGMA_END, levels)
    gamma = float(sigmas[0] / sigmas[1])
    eps = noise.langevin_step_size(sigmas, t)
    out.append(dict(
        name=name, dim=dim, sigma_1=s1, L_paper=levels,
        L_technique2=noise.num_noise_levels(s1, SIGMA_END, dim),
        coverage_paper_L=noise.coverage(gamma, dim), T=t, eps_paper=eps_paper,
        eps_technique4=eps, gamma=gamma,
        ratio_at_paper_eps=float(noise.langevin_variance_ratio(eps_paper, t, gamma, SIGMA_END)),
        ratio_at_technique4=float(noise.langevin_variance_ratio(eps, t, gamma, SIGMA_END))))
  return out


def format_rows(rows) -> str:
  head = (f"{'dataset':<20} {'D':>6} {'sigma_1':>7} {'L paper':>7} {'L T2':>5} "
          f"{'cov(L)':>6} {'T':>2} {'eps paper':>9} {'eps T4':>9} {'Eq4 paper':>9} {'Eq4 T4':>7}")
  lines = [head]
  for r in rows:
    lines.append(
        f"{r['name']:<20} {r['dim']:>6} {r['sigma_1']:>7g} {r['L_paper']:>7} "
        f"{r['L_technique2']:>5} {r['coverage_paper_L']:>6.3f} {r['T']:>2} "
        f"{r['eps_paper']:>9.2g} {r['eps_technique4']:>9.3g} {r['ratio_at_paper_eps']:>9.4f} "
        f"{r['ratio_at_technique4']:>7.4f}")
  return "\n".join(lines)


def plot(rows, path):
  plt = figures.pyplot()
  fig, ax = plt.subplots(figsize=(7, 4.5))
  grid = np.geomspace(1e-8, 5e-5, 400)
  for r in rows:
    line, = ax.plot(grid, noise.langevin_variance_ratio(grid, r["T"], r["gamma"], SIGMA_END),
                    label=f"{r['name']} (T={r['T']})")
    ax.plot([r["eps_paper"]], [r["ratio_at_paper_eps"]], "o", color=line.get_color())
    ax.plot([r["eps_technique4"]], [r["ratio_at_technique4"]], "x", color=line.get_color())
  ax.axhline(1.0, color="k", lw=0.5)
  ax.set_xscale("log")
  ax.set_ylim(0.95, 1.2)
  ax.set_xlabel("eps")
  ax.set_ylabel("Eq. 4: s_T^2 / sigma_i^2")
  ax.set_title("Eq. 4 for Table 4's levels (o paper's eps, x Technique 4)")
  ax.legend(fontsize=8)
  figures.save(fig, path)


def main():
  p = argparse.ArgumentParser()
  p.add_argument("--out", default="noise_table.png")
  args = p.parse_args()
  rows = compute()
  print(format_rows(rows))
  plot(rows, args.out)
  print(f"wrote {args.out}")


if __name__ == "__main__":
  main()
