"""A method = how a network is trained and what it natively predicts, as pure closures.

`score_jax.build` picks the method of `model.name` (its `METHODS` registry) and calls its
`make` with explicit arguments; each returns a `Method`: the training loss,
the network as a denoiser D(x; sigma) in the [-1, 1] data space (`precond`), and the native
outputs the papers' own samplers use (NCSN's indexed score, DDPM's epsilon), so that every
sampler runs on every network and the native pairs reproduce the official numbers.
"""

from typing import Callable, NamedTuple, Optional

import numpy as np


class Method(NamedTuple):
  """Closures over a linen module and its settings; all are pure functions of params.

  Attributes:
    name: 'ncsn' (NCSN and NCSNv2), 'ddpm' or 'edm'.
    loss_fn: (params, batch [B, H, W, C] in [0, 1], key, labels=None [B] int,
      sample_ids=None [B] int) -> scalar training loss; sample_ids (the rows' places in the
      global batch) let a loss draw per sample, the same whatever the accumulation rounds.
    denoiser: params -> precond.Denoiser.
    score_fn: params -> score_fn(x, i) at the native level index (NCSN's Langevin), or None.
    eps_fn: params -> eps_fn(x_t, t) (DDPM's ancestral sampler), or None.
    levels: the native noise levels of score_fn, float32 [L] in [0, 1] data units, or None.
    betas: the native DDPM betas, float64 [T], or None.
    default_sampler: the paper's sampler for this method.
    label_dim: classes of a class-conditional network (denoiser(params, one_hot [B, K])),
      0 for an unconditional one.
  """
  name: str
  loss_fn: Callable
  denoiser: Callable
  score_fn: Optional[Callable]
  eps_fn: Optional[Callable]
  levels: Optional[np.ndarray]
  betas: Optional[np.ndarray]
  default_sampler: str
  label_dim: int = 0
