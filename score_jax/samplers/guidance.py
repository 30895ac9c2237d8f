"""Guidance: one denoiser from two (EDM2's convention, Karras et al. 2024).

D_w(x; sigma) = D_guide + w (D_main - D_guide): w = 1 is D_main alone. Classifier-free
guidance takes the conditional output as D_main and the unconditional one (label dropped) as
D_guide; autoguidance takes a weaker model of the same data as D_guide.
"""


def guided(main_fn, guide_fn, weight: float):
  """A denoiser fn(x, sigma) = guide_fn(x, sigma) + weight * (main_fn - guide_fn), usable by
  every sampler. weight 1 returns main_fn itself (no second call)."""
  if weight == 1:
    return main_fn

  def fn(x, sigma):
    guide = guide_fn(x, sigma)
    return guide + weight * (main_fn(x, sigma) - guide)

  return fn
