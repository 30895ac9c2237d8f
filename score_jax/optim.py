"""The optimizer: an optax chain whose last element keeps an EMA of the parameters."""

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax


class ParamEMAState(NamedTuple):
  """State of `ema_params`: the moving average of the parameters themselves."""
  count: jax.Array
  ema: Any


def ema_params(decay) -> optax.GradientTransformation:
  """Exponential moving average of the *parameters* (NCSNv2 Technique 5).

  `decay` is a number or a function of the update count (0 at the first update), as EDM's
  half-life with ramp-up (`edm_ema_decay`).

  optax.ema averages the updates; this keeps theta' <- decay * theta' + (1 - decay) * theta
  for the parameters theta after the step, as the official EMA helper does. It must be the
  last element of a chain, so the updates it sees are the final ones, and it needs `params`
  in `update`. Updates pass through unchanged. Find the average with `ema_of(opt_state)`.
  """
  if not callable(decay) and not 0.0 <= decay <= 1.0:
    raise ValueError(f"EMA decay={decay!r} must lie in [0, 1].")
  decay_at = decay if callable(decay) else (lambda count: decay)

  def init_fn(params):
    return ParamEMAState(count=jnp.zeros([], jnp.int32),
                         ema=jax.tree.map(lambda p: jnp.array(p, copy=True), params))

  def update_fn(updates, state, params=None):
    if params is None:
      raise ValueError("ema_params needs the current params: call tx.update(g, s, params).")
    new_params = optax.apply_updates(params, updates)
    beta = decay_at(state.count)
    ema = jax.tree.map(lambda e, p: beta * e + (1.0 - beta) * p, state.ema, new_params)
    return updates, ParamEMAState(count=state.count + 1, ema=ema)

  return optax.GradientTransformation(init_fn, update_fn)


def ema_of(opt_state):
  """The parameter EMA held in an optimizer state, or None when the chain keeps none."""
  found = [s for s in jax.tree.leaves(opt_state, is_leaf=lambda s: isinstance(s, ParamEMAState))
           if isinstance(s, ParamEMAState)]
  if len(found) > 1:
    raise ValueError(f"the optimizer state holds {len(found)} parameter EMAs; expected one.")
  return found[0].ema if found else None


def edm_ema_decay(batch_size: int, halflife_kimg: float, rampup_ratio: float):
  """EDM's EMA decay at update `count` (images seen before it: count x batch): a half-life of
  halflife_kimg thousand images, capped at rampup_ratio x the images seen, so the average
  starts as the weights themselves (decay 0 at the first update) and forgets its early
  values as training goes on."""
  def decay(count):
    nimg = count.astype(jnp.float32) * batch_size
    halflife = jnp.float32(halflife_kimg * 1000)
    if rampup_ratio:
      halflife = jnp.minimum(halflife, nimg * rampup_ratio)
    return 0.5 ** (batch_size / jnp.maximum(halflife, 1e-8))
  return decay


SCHEDULES = ("constant", "cosine")


def learning_rate(schedule: str, lr: float, warmup: int, n_iters: int,
                  lr_end: float = 0.0) -> optax.Schedule:
  """step -> learning rate: `warmup` steps of linear warm-up from 0 to `lr`, then constant
  ('constant', the official NCSNv2 setting) or a cosine down to `lr_end` at step `n_iters`
  ('cosine'; a short run ends on small steps instead of on an EMA of large ones). The step
  is the optimizer's own count, so a resumed run continues it. (The builder checks the
  ranges and names the config keys.)
  """
  if schedule not in SCHEDULES:
    raise ValueError(f"schedule={schedule!r}; expected one of {SCHEDULES}.")
  if schedule == "cosine":
    return optax.warmup_cosine_decay_schedule(0.0, lr, warmup, n_iters, lr_end)
  if warmup:
    return optax.join_schedules(
        [optax.linear_schedule(0.0, lr, warmup), optax.constant_schedule(lr)], [warmup])
  return optax.constant_schedule(lr)


def make_optimizer(lr_fn: optax.Schedule, beta1: float = 0.9, eps: float = 1e-8,
                   weight_decay: float = 0.0, grad_clip: float = 0.0, ema_decay=None,
                   power_gammas=()) -> optax.GradientTransformation:
  """Adam as the official code uses it (L2 weight decay added to the gradient, not AdamW;
  beta2 0.999), global-norm clipping when `grad_clip` > 0, the schedule `lr_fn`, then the
  parameter EMA with `ema_decay` (a number, or a function of the update count such as
  `edm_ema_decay`) unless it is None, then EDM2's power EMAs of `power_gammas`."""
  parts = []
  if grad_clip and grad_clip > 0:
    parts.append(optax.clip_by_global_norm(grad_clip))
  if weight_decay:
    parts.append(optax.add_decayed_weights(weight_decay))
  parts += [optax.scale_by_adam(b1=beta1, b2=0.999, eps=eps), optax.scale_by_learning_rate(lr_fn)]
  if ema_decay is not None:
    parts.append(ema_params(ema_decay))
  if power_gammas:
    parts.append(power_emas(power_gammas))
  return optax.chain(*parts)


def with_ema(opt_state, ema):
  """`opt_state` with its parameter EMA replaced by `ema` (same structure as the params)."""
  if ema_of(opt_state) is None:
    raise ValueError("the optimizer state keeps no parameter EMA to replace.")
  return jax.tree.map(
      lambda s: s._replace(ema=ema) if isinstance(s, ParamEMAState) else s, opt_state,
      is_leaf=lambda s: isinstance(s, ParamEMAState))


class PowerEMAState(NamedTuple):
  """State of `power_emas`: optimizer steps taken, and one power EMA per gamma."""
  count: jax.Array
  emas: tuple


def power_emas(gammas) -> optax.GradientTransformation:
  """EDM2's power-function EMAs of the parameters (score_jax.posthoc_ema): after optimizer
  step t (t = 1 first), ema_k = beta ema_k + (1 - beta) params with beta = (1 - 1/t)^(gamma_k
  + 1). Last in a chain, as `ema_params`; updates pass through unchanged."""
  gammas = tuple(float(g) for g in gammas)

  def init_fn(params):
    return PowerEMAState(count=jnp.zeros([], jnp.int32),
                         emas=tuple(jax.tree.map(jnp.zeros_like, params) for _ in gammas))

  def update_fn(updates, state, params=None):
    if params is None:
      raise ValueError("power_emas needs the current params: call tx.update(g, s, params).")
    new_params = optax.apply_updates(params, updates)
    t = (state.count + 1).astype(jnp.float32)
    emas = []
    for g, ema in zip(gammas, state.emas):
      beta = (1.0 - 1.0 / t) ** (g + 1.0)
      emas.append(jax.tree.map(lambda e, p, b=beta: b * e + (1.0 - b) * p, ema, new_params))
    return updates, PowerEMAState(count=state.count + 1, emas=tuple(emas))

  return optax.GradientTransformation(init_fn, update_fn)


def power_emas_of(opt_state):
  """The tuple of power EMAs held in an optimizer state, or None."""
  found = [s for s in jax.tree.leaves(opt_state, is_leaf=lambda s: isinstance(s, PowerEMAState))
           if isinstance(s, PowerEMAState)]
  return found[0].emas if found else None
