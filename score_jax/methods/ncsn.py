"""NCSN / NCSNv2: denoising score matching over geometric noise levels, data in [0, 1]."""

import jax
import numpy as np

from score_jax import losses, precond, samplers
from score_jax.methods import Method


def make(model, sigmas: np.ndarray, anneal_power: float, continuous: bool,
         loss: str = "dsm", projection: str = "gaussian", n_particles: int = 1) -> Method:
  """The method of an NCSN (`continuous=False`: index-conditioned) or NCSNv2 (output / sigma:
  any sigma will do) network on the levels `sigmas` (float32 [L], decreasing, [0, 1] units),
  trained by denoising (`loss='dsm'`) or sliced ('ssm': `projection`, `n_particles`) score
  matching, weighted by sigma^anneal_power."""

  def loss_fn(params, batch, key, labels=None, sample_ids=None):
    del labels  # unconditional
    if sample_ids is not None:  # an accumulation round: its own draws (they follow shapes)
      key = jax.random.fold_in(key, sample_ids[0])
    score_fn = lambda x, y: model.apply({"params": params}, x, y)
    if loss == "ssm":
      return losses.ssm_loss(score_fn, batch, sigmas, key, anneal_power, projection,
                             n_particles)
    return losses.dsm_loss(score_fn, batch, sigmas, key, anneal_power)

  def denoiser(params):
    variables = {"params": params}
    if continuous:
      score = lambda u, s: model.apply(variables, u, s, method="score_at_sigma")
      grid = None
    else:
      score = lambda u, s: model.apply(variables, u, precond.nearest_index(s, sigmas))
      grid = sigmas
    return precond.from_score(score, float(sigmas[-1]), float(sigmas[0]), (0.0, 1.0), grid)

  return Method(
      name="ncsn", loss_fn=loss_fn, denoiser=denoiser,
      score_fn=lambda params: samplers.indexed_score_fn(model.apply, {"params": params}),
      eps_fn=None, levels=sigmas, betas=None, default_sampler="langevin")
