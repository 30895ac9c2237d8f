"""score_sde's predictor-corrector sampler (Song et al. 2021, Alg. 2-3) for the VE SDE on a
sigma sequence, on a denoiser: the score is (D(x; sigma) - x) / sigma^2.

Each step i first runs `n_corrector` Langevin corrector steps at sigma_i (step size from the
signal-to-noise ratio `snr`: eps = 2 (snr ||z|| / ||score||)^2 per sample, score_sde's
LangevinCorrector), then one predictor step to sigma_(i+1):
- 'reverse_diffusion': x + (sigma_i^2 - sigma_(i+1)^2) score + sqrt(sigma_i^2 -
  sigma_(i+1)^2) z (score_sde's ReverseDiffusionPredictor on the VE SDE);
- 'euler_maruyama': the same SDE with its coefficient taken at sigma_i: d(sigma^2) =
  2 sigma_i (sigma_i - sigma_(i+1)).
The step into sigma = 0 adds no noise (score_sde's `denoise`: the last mean). NFE =
steps (1 + n_corrector).
"""

import jax.numpy as jnp
import numpy as np

from score_jax.samplers.common import _normal_per_sample, per_sample_keys
from score_jax.samplers.kdiffusion import _consts, host_sigmas, scan_steps

PREDICTORS = ("reverse_diffusion", "euler_maruyama")


def pc(denoise_fn, x, sigmas, key=None, sample_ids=None, predictor: str = "reverse_diffusion",
       n_corrector: int = 1, snr: float = 0.16):
  """Predictor-corrector sampling; `snr` 0.16 and one corrector step are score_sde's CIFAR-10
  VE settings."""
  if predictor not in PREDICTORS:
    raise ValueError(f"predictor={predictor!r}; expected one of {PREDICTORS}.")
  if n_corrector < 0:
    raise ValueError(f"n_corrector={n_corrector!r} must be >= 0.")
  if key is None:
    raise ValueError("pc is stochastic: it needs a key.")
  s = host_sigmas(sigmas)
  nxt = s[1:]
  var = (s[:-1] ** 2 - nxt**2 if predictor == "reverse_diffusion"
         else 2.0 * s[:-1] * (s[:-1] - nxt))
  keys = per_sample_keys(key, x.shape[0], sample_ids)
  draws = 1 + n_corrector
  b = x.shape[0]

  def norm(v):
    return jnp.sqrt(jnp.sum((v * v).reshape(b, -1), axis=1)).reshape((b,) + (1,) * (v.ndim - 1))

  def step(x, c):
    score = lambda u: (denoise_fn(u, c["s"]) - u) / c["s"] ** 2
    for j in range(n_corrector):
      g = score(x)
      z = _normal_per_sample(keys, draws * c["i"] + 1 + j, x.shape[1:], x.dtype)
      eps = 2.0 * (snr * norm(z) / norm(g)) ** 2
      x = x + eps * g + jnp.sqrt(2.0 * eps) * z
    z = _normal_per_sample(keys, draws * c["i"], x.shape[1:], x.dtype)
    return x + c["var"] * score(x) + c["noise"] * z

  return scan_steps(step, x, _consts(x.dtype, s=s[:-1], var=var,
                                     noise=np.where(nxt > 0, np.sqrt(var), 0.0),
                                     i=np.arange(len(s) - 1)))
