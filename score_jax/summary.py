"""`--mode=summary`: a network's exact parameter count and FLOPs per image, nothing run."""

import jax
import jax.numpy as jnp
import numpy as np

from score_jax import models


def summarize(config) -> dict:
  """{'model', 'params', 'flops_per_image', 'image_shape'} for `get_model(config)`.

  Parameters come from `jax.eval_shape` of init (no weights computed); FLOPs from XLA's
  cost analysis of one forward pass on one image, lowered but not compiled (multiply-adds
  count as 2 FLOPs).
  """
  model = models.get_model(config)
  x, y = models.example_inputs(config)
  variables = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), x, y))
  params = sum(int(np.prod(v.shape)) for v in jax.tree.leaves(variables))
  lowered = jax.jit(model.apply).lower(variables, jax.ShapeDtypeStruct(x.shape, jnp.float32),
                                       jax.ShapeDtypeStruct(y.shape, y.dtype))
  cost = lowered.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return dict(model=config.model.name, params=params,
              flops_per_image=float(cost.get("flops", float("nan"))),
              image_shape=tuple(x.shape[1:]))


def format_summary(s: dict) -> str:
  h, w, c = s["image_shape"]
  return (f"model: {s['model']} on {h}x{w}x{c}\nparams: {s['params']}\n"
          f"flops per image: {s['flops_per_image']:.4g} ({s['flops_per_image'] / 1e9:.3f} GFLOP)")
