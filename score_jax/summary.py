"""`--mode=summary`: a network's exact parameter count and FLOPs per image, nothing run."""

import jax

from score_jax import models


def xla_cost(stage) -> dict:
  """XLA's cost analysis of a lowered or compiled program as one dict ('flops', 'bytes
  accessed', ...; a multiply-add counts 2 FLOPs). Older jax returned a one-element list."""
  cost = stage.cost_analysis()
  return cost[0] if isinstance(cost, (list, tuple)) else cost


def summarize(built) -> dict:
  """{'model', 'params', 'flops_per_image', 'image_shape'} for a `build.Built`'s network.

  Parameters come from `jax.eval_shape` of init (no weights computed; constants such as
  NCSN++'s Fourier frequencies are not parameters, as in the official count); FLOPs from XLA's
  cost analysis of one forward pass on one image, lowered but not compiled (multiply-adds
  count as 2 FLOPs).
  """
  model, inputs = built.network, built.inputs
  x = inputs[0]
  variables = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), *inputs))
  params = models.count_params(variables["params"])
  spec = lambda a: None if a is None else jax.ShapeDtypeStruct(a.shape, a.dtype)
  lowered = jax.jit(model.apply).lower(variables, *(spec(a) for a in inputs))
  cost = xla_cost(lowered)
  return dict(model=built.name, params=params,
              flops_per_image=float(cost.get("flops", float("nan"))),
              image_shape=tuple(x.shape[1:]))


def format_summary(s: dict) -> str:
  h, w, c = s["image_shape"]
  return (f"model: {s['model']} on {h}x{w}x{c}\nparams: {s['params']}\n"
          f"flops per image: {s['flops_per_image']:.4g} ({s['flops_per_image'] / 1e9:.3f} GFLOP)")
