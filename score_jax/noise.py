"""Noise levels for score matching over several scales."""

import numpy as np


def geometric_sigmas(sigma_begin: float, sigma_end: float, num_classes: int) -> np.ndarray:
  """Geometric sequence sigma_1 > ... > sigma_L, as NCSN / NCSNv2 use.

  Computed in float64 in NumPy and returned as float32, the same rounding as the official
  PyTorch code, so that index-conditioned networks see bit-identical sigmas.

  Args:
    sigma_begin: the largest noise standard deviation, sigma_1 (data units, [0, 1] images).
    sigma_end: the smallest, sigma_L; must be below sigma_begin.
    num_classes: L, the number of levels (at least 2).

  Returns:
    float32 array of shape [L], decreasing.
  """
  if not np.isfinite(sigma_begin) or not np.isfinite(sigma_end) or sigma_end <= 0:
    raise ValueError(
        f"sigma_begin={sigma_begin!r} and sigma_end={sigma_end!r} must be finite and positive.")
  if sigma_begin <= sigma_end:
    raise ValueError(
        f"sigma_begin={sigma_begin!r} must be larger than sigma_end={sigma_end!r}: "
        "noise levels run from the largest to the smallest.")
  if int(num_classes) != num_classes or num_classes < 2:
    raise ValueError(f"num_classes={num_classes!r} must be an integer >= 2 (the number of levels).")
  log_sigmas = np.linspace(np.log(sigma_begin), np.log(sigma_end), int(num_classes))
  return np.exp(log_sigmas).astype(np.float32)


def sigmas_from_config(config) -> np.ndarray:
  """The noise levels of `config.model` (sigma_begin, sigma_end, num_classes); float32 [L]."""
  return geometric_sigmas(config.model.sigma_begin, config.model.sigma_end,
                          config.model.num_classes)
