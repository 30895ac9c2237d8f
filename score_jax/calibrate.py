"""`main.py --mode=calibrate`: sigma_1, gamma, L and eps from the training data (NCSNv2
Techniques 1, 2 and 4), beside the values the config holds."""

import os

import numpy as np

from score_jax import data, noise


def calibrate(images, current: dict, seed: int = 0, coverage_target: float = 0.5) -> dict:
  """Suggested noise settings for `images` (float32 [N, H, W, C] in [0, 1]).

  `current` holds the settings in use: sigma_begin, sigma_end, num_classes (the geometric
  levels), n_steps_each and step_lr (Langevin). Returns a dict with: sigma_begin (Technique
  1), gamma and num_classes (Technique 2 for the data dimension, from sigma_begin to
  sigma_end), coverage (what the suggested levels achieve), step_lr (Technique 4 for
  n_steps_each), and the current values under 'config_*'.
  """
  dim = int(np.prod(images.shape[1:]))
  sigma_begin = noise.max_pairwise_distance(images, seed=seed)
  sigma_end = current["sigma_end"]
  gamma = noise.geometric_ratio(dim, coverage_target)
  levels = noise.num_noise_levels(sigma_begin, sigma_end, dim, coverage_target)
  sigmas = noise.geometric_sigmas(sigma_begin, sigma_end, levels)
  t = current["n_steps_each"]
  step_lr = noise.langevin_step_size(sigmas, t)
  actual_gamma = float(sigmas[0] / sigmas[1])
  cfg_sigmas = noise.geometric_sigmas(current["sigma_begin"], sigma_end, current["num_classes"])
  cfg_gamma = float(cfg_sigmas[0] / cfg_sigmas[1])
  return {
      "dim": dim, "sigma_begin": sigma_begin, "gamma": gamma, "num_classes": levels,
      "coverage": noise.coverage(actual_gamma, dim), "step_lr": step_lr,
      "eq4_ratio": float(noise.langevin_variance_ratio(step_lr, t, actual_gamma, sigma_end)),
      "config_sigma_begin": current["sigma_begin"],
      "config_num_classes": current["num_classes"],
      "config_coverage": noise.coverage(cfg_gamma, dim),
      "config_step_lr": current["step_lr"],
      "config_eq4_ratio": float(noise.langevin_variance_ratio(
          current["step_lr"], t, cfg_gamma, sigma_end)),
  }


def override_line(result: dict) -> str:
  return (f"--config.model.sigma_begin={result['sigma_begin']:.4g} "
          f"--config.model.num_classes={result['num_classes']} "
          f"--config.sampling.step_lr={result['step_lr']:.3g}")


def report(result: dict, n_steps_each: int) -> str:
  r = result
  rows = [
      ("sigma_1 (Technique 1: max pairwise distance)", f"{r['sigma_begin']:.4g}",
       f"{r['config_sigma_begin']:.4g}"),
      ("gamma (Technique 2, coverage 0.5)", f"{r['gamma']:.5f}", ""),
      ("L (Technique 2)", str(r["num_classes"]), str(r["config_num_classes"])),
      ("coverage of consecutive levels", f"{r['coverage']:.3f}", f"{r['config_coverage']:.3f}"),
      (f"eps for T = {n_steps_each} (Technique 4)", f"{r['step_lr']:.3g}",
       f"{r['config_step_lr']:.3g}"),
      ("Eq. 4 variance ratio at that eps", f"{r['eq4_ratio']:.4f}", f"{r['config_eq4_ratio']:.4f}"),
  ]
  width = max(len(a) for a, _, _ in rows)
  lines = [f"{'data dimension D = ' + str(r['dim']):<{width}}  {'suggested':>10}  {'config':>10}"]
  lines += [f"{a:<{width}}  {b:>10}  {c:>10}" for a, b, c in rows]
  lines.append("override: " + override_line(r))
  return "\n".join(lines)


def run(built, workdir: str) -> dict:
  """`--mode=calibrate` of a `build.Built`: print the report and write the override line to
  workdir/calibration.txt."""
  images = data.load_images(built.data, "train", progress="calibrate: read")
  result = calibrate(images, built.noise_settings, built.seed)
  text = report(result, built.noise_settings["n_steps_each"])
  print(text)
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, "calibration.txt"), "w") as f:
    f.write(text + "\n")
  return result
