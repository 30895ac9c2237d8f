"""UniPC (Zhao et al. 2023): a multistep predictor (UniP) and the UniC corrector, data
prediction, in the EDM space (lambda = -log sigma), as diffusers' UniPCMultistepScheduler
with predict_x0=True runs it.

Step i: D_i = D(x_i; sigma_i); from step 1 on, UniC corrects x_i with D_i and the history
(order of the previous predictor), then UniP of order min(order, i + 1) (and, with
`lower_order_final`, at most steps - i) predicts x_(i+1). No corrector follows the last
step, so NFE = steps. Both are linear in (x, D history): their weights come from small
linear solves on the host (`_uni_weights`) and the scan only adds.
"""

import jax.numpy as jnp
import numpy as np

from score_jax.samplers.kdiffusion import _consts, host_sigmas, scan_steps

VARIANTS = ("bh1", "bh2")


def _rhs(hh: float, order: int, variant: str):
  """(B(h), b [order]) of the UniPC order conditions at hh = -h (h the lambda step)."""
  b_h = hh if variant == "bh1" else np.expm1(hh)
  h_phi_1 = np.expm1(hh)
  h_phi_k = h_phi_1 / hh - 1.0
  factorial, b = 1, []
  for i in range(1, order + 1):
    b.append(h_phi_k * factorial / b_h)
    factorial *= i + 1
    h_phi_k = h_phi_k / hh - 1.0 / factorial
  return b_h, np.asarray(b)


def _uni_weights(lam, i: int, order: int, variant: str, corrector: bool):
  """Weights of one UniP (corrector=False: from point i to i + 1, on D_i, D_(i-1), ...) or
  UniC (True: the step from i - 1 to i, on D_i, D_(i-1), D_(i-2), ...) update:
  (ratio on the start sample, weights [4] on D_i, D_(i-1), D_(i-2), D_(i-3))."""
  s0 = i - 1 if corrector else i  # the step starts at point s0 and ends at t
  t = s0 + 1
  h = lam[t] - lam[s0]
  hh = -h
  w = np.zeros(4)
  ratio = np.exp(hh)  # sigma_t / sigma_s0
  h_phi_1 = np.expm1(hh)
  base = 1 if corrector else 0  # where D_(s0) sits in the weight vector
  w[base] += -h_phi_1  # x_t_ = ratio x - h_phi_1 D_s0
  rks = np.array([(lam[s0 - k] - lam[s0]) / h for k in range(1, order)] + [1.0])
  b_h, b = _rhs(hh, order, variant)
  big_r = np.stack([rks ** (j - 1) for j in range(1, order + 1)])
  if corrector:
    rhos = np.array([0.5]) if order == 1 else np.linalg.solve(big_r, b)
    # - B_h (sum_k rho_k (D_(s0-k) - D_s0) / r_k + rho_last (D_t - D_s0))
    for k in range(1, order):
      w[base + k] -= b_h * rhos[k - 1] / rks[k - 1]
      w[base] += b_h * rhos[k - 1] / rks[k - 1]
    w[0] -= b_h * rhos[-1]
    w[base] += b_h * rhos[-1]
  elif order >= 2:
    rhos = np.array([0.5]) if order == 2 else np.linalg.solve(big_r[:-1, :-1], b[:-1])
    for k in range(1, order):
      w[base + k] -= b_h * rhos[k - 1] / rks[k - 1]
      w[base] += b_h * rhos[k - 1] / rks[k - 1]
  return ratio, w


def unipc_orders(steps: int, order: int, lower_order_final: bool) -> np.ndarray:
  """The predictor's order at each step: min(order, i + 1), and at most steps - i with
  lower_order_final (diffusers' rule)."""
  i = np.arange(steps)
  out = np.minimum(order, i + 1)
  if lower_order_final:
    out = np.minimum(out, steps - i)
  return out


def unipc(denoise_fn, x, sigmas, key=None, sample_ids=None, order: int = 2,
          variant: str = "bh2", lower_order_final: bool = True):
  """UniPC with its UniC corrector: `variant` 'bh1' (B(h) = h) or 'bh2' (B(h) = e^h - 1),
  predictor `order` 1-3. A last sigma of 0 is reached by a first-order step that returns D
  (diffusers' 'bh1' gives NaN there). NFE = steps."""
  del key, sample_ids
  if order not in (1, 2, 3):
    raise ValueError(f"order={order!r}; expected 1, 2 or 3.")
  if variant not in VARIANTS:
    raise ValueError(f"variant={variant!r}; expected one of {VARIANTS}.")
  s = host_sigmas(sigmas)
  steps = len(s) - 1
  p_orders = unipc_orders(steps, order, lower_order_final)
  lam = -np.log(np.where(s > 0, s, 1.0))
  p_ratio, p_w = np.zeros(steps), np.zeros((steps, 4))
  c_self, c_ratio, c_w = np.zeros(steps), np.zeros(steps), np.zeros((steps, 4))
  for i in range(steps):
    if s[i + 1] == 0:  # B(h) is infinite (bh1) or -1 (bh2) there: the step returns D
      p_w[i, 0] = 1.0
    else:
      p_ratio[i], p_w[i] = _uni_weights(lam, i, int(p_orders[i]), variant, corrector=False)
    if i == 0:
      c_self[i] = 1.0
    else:
      c_ratio[i], c_w[i] = _uni_weights(lam, i, int(p_orders[i - 1]), variant, corrector=True)

  def step(carry, c):
    x, last, hist = carry
    hist = jnp.concatenate([denoise_fn(x, c["s"])[None], hist[:-1]])
    x = c["c_self"] * x + c["c_ratio"] * last + jnp.tensordot(c["c_w"], hist, axes=1)
    return (c["p_ratio"] * x + jnp.tensordot(c["p_w"], hist, axes=1), x, hist)

  hist = jnp.zeros((4,) + x.shape, x.dtype)
  consts = _consts(x.dtype, s=s[:-1], c_self=c_self, c_ratio=c_ratio, c_w=c_w,
                   p_ratio=p_ratio, p_w=p_w)
  out, _, _ = scan_steps(step, (x, x, hist), consts)
  return out
