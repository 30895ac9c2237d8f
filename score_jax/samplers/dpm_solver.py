"""DPM-Solver (Lu et al. 2022: noise prediction) and DPM-Solver++ (Lu et al. 2023: data
prediction), in the EDM space where lambda = -log sigma, on a denoiser D(x; sigma).

Every multistep update here is x_next = r x + sum_j w_j D_(i-j): the weights for each step's
order are computed on the host in float64 (`_dpmpp_weights`), the denoised history rides in
the scan carry. Orders follow k-diffusion by default (first order at the start, full order
after, the step to sigma = 0 returns D) and diffusers with `lower_order_final=True` (with
fewer than 15 steps the last step is first order and, for order 3, the one before it second
order). The signature is the samplers' one: fn(denoise_fn, x, sigmas, key=None, **options).
"""

import jax
import jax.numpy as jnp
import numpy as np

from score_jax.samplers.common import _normal_per_sample, per_sample_keys
from score_jax.samplers.kdiffusion import _consts, ancestral_step, host_sigmas, scan_steps

SOLVER_TYPES = ("midpoint", "heun")


def multistep_orders(sigmas: np.ndarray, order: int, lower_order_final: bool) -> np.ndarray:
  """The order of each step of a multistep solver: min(i + 1, order), first order into
  sigma = 0, and diffusers' lower_order_final rule when asked."""
  steps = len(sigmas) - 1
  orders = np.minimum(np.arange(steps) + 1, order)
  if lower_order_final and steps < 15:
    orders[-1] = 1
    if steps >= 2:
      orders[-2] = min(orders[-2], 2)
  orders[sigmas[1:] == 0] = 1
  return orders


def _phis(h):
  """phi_1 h = 1 - e^-h, phi_2 = 1 - (1 - e^-h) / h, phi_3 = phi_2 / h - 1/2."""
  one = -np.expm1(-h)
  phi_2 = 1.0 - one / h
  return one, phi_2, phi_2 / h - 0.5


def _dpmpp_weights(s: np.ndarray, orders: np.ndarray, solver_type: str, eta: float = 0.0):
  """(ratio [steps], weights [steps, 3]) with x_next = ratio x + sum_j w_j D_(i-j): the
  DPM-Solver++ update of each step at its order (h the step in lambda, r_k the earlier
  steps over h). With eta > 0 the SDE variant's deterministic part (k-diffusion's
  dpmpp_2m_sde / 3m_sde): e^(-eta h) damps x and h becomes h (1 + eta) in the phis."""
  steps = len(s) - 1
  ratio, w = np.zeros(steps), np.zeros((steps, 3))
  lam = -np.log(np.where(s > 0, s, 1.0))
  for i in range(steps):
    if s[i + 1] == 0:
      w[i, 0] = 1.0  # the step to sigma = 0 returns D
      continue
    h = lam[i + 1] - lam[i]
    h_eta = h * (1.0 + eta)
    ratio[i] = s[i + 1] / s[i] * np.exp(-eta * h)
    one, phi_2, phi_3 = _phis(h_eta)
    w[i, 0] = one
    if orders[i] == 2:
      r0 = (lam[i] - lam[i - 1]) / h
      c = (0.5 * one if solver_type == "midpoint" else phi_2) / r0  # on D_i - D_(i-1)
      w[i, 0] += c
      w[i, 1] -= c
    elif orders[i] == 3:
      r0, r1 = (lam[i] - lam[i - 1]) / h, (lam[i - 1] - lam[i - 2]) / h
      # D1 = d1_0 + r0 / (r0 + r1) (d1_0 - d1_1), D2 = (d1_0 - d1_1) / (r0 + r1) with
      # d1_0 = (D_i - D_(i-1)) / r0, d1_1 = (D_(i-1) - D_(i-2)) / r1; x += phi_2 D1 - phi_3 D2.
      a = (phi_2 * (1.0 + r0 / (r0 + r1)) - phi_3 / (r0 + r1)) / r0  # on d = D_i - D_(i-1)
      b = (phi_2 * r0 / (r0 + r1) - phi_3 / (r0 + r1)) / r1  # on D_(i-1) - D_(i-2)
      w[i] += (a, -a - b, b)  # a (D_i - D_(i-1)) - b (D_(i-1) - D_(i-2))
  return ratio, w


def _multistep(denoise_fn, x, s, ratio, weights, keys=None, noise_scale=None,
               predict: str = "data"):
  """The scan shared by the multistep samplers: x_next = ratio x + sum_j w_j H_(i-j), H the
  history of D (`predict='data'`) or of eps = (x - D) / sigma ('noise'); with `keys`, adds
  noise_scale_i z_i after step i (z per sample id)."""
  def step(carry, c):
    x, hist = carry
    out = denoise_fn(x, c["s"])
    if predict == "noise":
      out = (x - out) / c["s"]
    hist = jnp.concatenate([out[None], hist[:-1]])
    x = c["ratio"] * x + jnp.tensordot(c["w"], hist, axes=1)
    if keys is not None:
      x = x + _normal_per_sample(keys, c["i"], x.shape[1:], x.dtype) * c["noise"]
    return x, hist

  consts = dict(s=np.where(s[:-1] > 0, s[:-1], 1.0), ratio=ratio, w=weights,
                i=np.arange(len(s) - 1))
  if keys is not None:
    consts["noise"] = noise_scale
  hist = jnp.zeros((weights.shape[1],) + x.shape, x.dtype)
  out, _ = scan_steps(step, (x, hist), _consts(x.dtype, **consts))
  return out


def _check_type(solver_type: str):
  if solver_type not in SOLVER_TYPES:
    raise ValueError(f"solver_type={solver_type!r}; expected one of {SOLVER_TYPES}.")


def dpmpp_2m(denoise_fn, x, sigmas, key=None, sample_ids=None, solver_type: str = "midpoint",
             lower_order_final: bool = False):
  """DPM-Solver++(2M) (k-diffusion's sample_dpmpp_2m; diffusers' DPMSolverMultistep with
  `lower_order_final=True`). NFE = steps."""
  del key, sample_ids
  _check_type(solver_type)
  s = host_sigmas(sigmas)
  ratio, w = _dpmpp_weights(s, multistep_orders(s, 2, lower_order_final), solver_type)
  return _multistep(denoise_fn, x, s, ratio, w)


def dpmpp_3m(denoise_fn, x, sigmas, key=None, sample_ids=None, solver_type: str = "heun",
             lower_order_final: bool = False):
  """DPM-Solver++(3M): orders 1, 2, 3, 3, ... By default k-diffusion's sample_dpmpp_3m_sde
  with eta = 0 (its second-order warm-up is the 'heun' form); diffusers' default is
  solver_type='midpoint' with lower_order_final=True. NFE = steps."""
  del key, sample_ids
  _check_type(solver_type)
  s = host_sigmas(sigmas)
  ratio, w = _dpmpp_weights(s, multistep_orders(s, 3, lower_order_final), solver_type)
  return _multistep(denoise_fn, x, s, ratio, w)


def _noise_keys(key, x, sample_ids, name: str):
  if key is None:
    raise ValueError(f"{name} is stochastic: it needs a key.")
  return per_sample_keys(key, x.shape[0], sample_ids)


def dpmpp_2m_sde(denoise_fn, x, sigmas, key=None, sample_ids=None, eta: float = 1.0,
                 s_noise: float = 1.0, solver_type: str = "midpoint"):
  """DPM-Solver++(2M) SDE (k-diffusion's sample_dpmpp_2m_sde): the 2M update with the
  exponent h (1 + eta), x damped by e^(-eta h), then noise of std sigma_(i+1)
  sqrt(1 - e^(-2 eta h)) s_noise; the step to 0 returns D. Successive steps' intervals do
  not overlap, so independent normals give the Brownian tree's law. NFE = steps."""
  _check_type(solver_type)
  s = host_sigmas(sigmas)
  ratio, w = _dpmpp_weights(s, multistep_orders(s, 2, False), solver_type, eta)
  nxt = s[1:]
  h = np.log(s[:-1] / np.where(nxt > 0, nxt, s[:-1]))  # 0 on the step into sigma = 0
  scale = nxt * np.sqrt(-np.expm1(-2.0 * eta * h)) * s_noise
  return _multistep(denoise_fn, x, s, ratio, w, _noise_keys(key, x, sample_ids,
                                                            "dpmpp_2m_sde"), scale)


def _dpm_solver_eps_weights(s: np.ndarray, orders: np.ndarray, solver_type: str) -> np.ndarray:
  """[steps, 3] weights on the eps history of multistep DPM-Solver (noise prediction):
  x_next = x + sum_j w_j eps_(i-j); lambda = -log sigma, h its step."""
  steps = len(s) - 1
  w = np.zeros((steps, 3))
  lam = -np.log(np.where(s > 0, s, 1.0))
  for i in range(steps):
    w[i, 0] = -(s[i] - s[i + 1])  # sigma_t (e^h - 1): the first-order (DDIM) step
    if s[i + 1] == 0 or orders[i] == 1:
      continue
    h = lam[i + 1] - lam[i]
    a1 = s[i + 1] * (np.expm1(h) / h - 1.0)
    a2 = s[i + 1] * ((np.expm1(h) - h) / h**2 - 0.5)
    r0 = (lam[i] - lam[i - 1]) / h
    if orders[i] == 2:
      c = (0.5 * (s[i] - s[i + 1]) if solver_type == "midpoint" else a1) / r0
      w[i, :2] += (-c, c)
    else:
      r1 = (lam[i - 1] - lam[i - 2]) / h
      a = (a1 * (1.0 + r0 / (r0 + r1)) + a2 / (r0 + r1)) / r0
      b = (a1 * r0 / (r0 + r1) + a2 / (r0 + r1)) / r1
      w[i] += (-a, a + b, -b)  # -a (eps_i - eps_(i-1)) + b (eps_(i-1) - eps_(i-2))
  return w


def _single_step(denoise_fn, x, s, order: int):
  """k-diffusion's DPMSolver steps (noise prediction) over each interval: order 1 (DDIM),
  2 (r1 = 1/2) or 3 (r1 = 1/3, r2 = 2/3); `order` calls a step, first order into 0."""
  nxt = s[1:]
  safe = np.where(nxt > 0, nxt, s[:-1])
  h = np.log(s[:-1] / safe)
  r1, r2 = (0.5, 1.0) if order == 2 else (1.0 / 3.0, 2.0 / 3.0)
  s1, s2 = s[:-1] * np.exp(-r1 * h), s[:-1] * np.exp(-r2 * h)
  with np.errstate(divide="ignore", invalid="ignore"):
    # u2 = x - (s - s2) eps - s2 (r2 / r1) (expm1(r2 h) / (r2 h) - 1) (eps_1 - eps)
    c_u2 = np.nan_to_num(s2 * (r2 / r1) * (np.expm1(r2 * h) / (r2 * h) - 1.0))
    # x3 = x - (s - s') eps - s' / r2 (expm1(h) / h - 1) (eps_2 - eps)
    c_x3 = np.nan_to_num(safe / r2 * (np.expm1(h) / h - 1.0))
  consts = _consts(x.dtype, s=s[:-1], s1=s1, s2=s2, dt=s[:-1] - nxt, c_u2=c_u2, c_x3=c_x3,
                   high=(nxt > 0) & (order > 1))
  eps_fn = lambda u, sig: (u - denoise_fn(u, sig)) / sig

  def step(x, c):
    eps = eps_fn(x, c["s"])

    def higher(_):
      u1 = x - (c["s"] - c["s1"]) * eps
      e1 = eps_fn(u1, c["s1"])
      if order == 2:
        return x - c["dt"] * eps - c["dt"] / (2 * r1) * (e1 - eps)
      u2 = x - (c["s"] - c["s2"]) * eps - c["c_u2"] * (e1 - eps)
      return x - c["dt"] * eps - c["c_x3"] * (eps_fn(u2, c["s2"]) - eps)

    return jax.lax.cond(c["high"], higher, lambda _: x - c["dt"] * eps, None)

  return scan_steps(step, x, consts)


def dpm_solver(denoise_fn, x, sigmas, key=None, sample_ids=None, order: int = 2,
               multistep: bool = False, solver_type: str = "midpoint",
               lower_order_final: bool = False):
  """The original DPM-Solver (noise prediction): single-step of `order` 1-3 (order calls a
  step: k-diffusion's DPMSolver.dpm_solver_{1,2,3}_step over each interval), or with
  `multistep=True` diffusers' multistep DPM-Solver (algorithm_type='dpmsolver', NFE =
  steps). A step into sigma = 0 is first order."""
  del key, sample_ids
  if order not in (1, 2, 3):
    raise ValueError(f"order={order!r}; expected 1, 2 or 3.")
  _check_type(solver_type)
  s = host_sigmas(sigmas)
  if not multistep:
    return _single_step(denoise_fn, x, s, order)
  w = _dpm_solver_eps_weights(s, multistep_orders(s, order, lower_order_final), solver_type)
  return _multistep(denoise_fn, x, s, np.ones(len(s) - 1), w, predict="noise")


def dpmpp_sde(denoise_fn, x, sigmas, key=None, sample_ids=None, eta: float = 1.0,
              s_noise: float = 1.0, r: float = 0.5, noise: str = "brownian"):
  """DPM-Solver++ (stochastic, single-step 2S; k-diffusion's sample_dpmpp_sde): an ancestral
  data-prediction step to the intermediate sigma_s = sigma_i^(1-r) sigma_(i+1)^r, a second
  call there, and the step to sigma_(i+1) on the mix (1 - 1/(2r)) D + 1/(2r) D_s, each
  followed by ancestral noise. With noise='brownian' (k-diffusion's default
  BrownianTreeNoiseSampler) the two draws of a step are the normalised increments of one
  Brownian path in sigma over [sigma_s, sigma_i] and [sigma_(i+1), sigma_i], so they are
  correlated; noise='independent' draws them apart. The step to 0 is Euler. NFE = 2 steps
  - 1."""
  if noise not in ("brownian", "independent"):
    raise ValueError(f"noise={noise!r}; expected 'brownian' or 'independent'.")
  s = host_sigmas(sigmas)
  keys = _noise_keys(key, x, sample_ids, "dpmpp_sde")
  nxt = s[1:]
  safe = np.where(nxt > 0, nxt, s[:-1])
  sig_s = s[:-1] ** (1.0 - r) * safe ** r
  down1, up1 = ancestral_step(s[:-1], sig_s, eta)
  down2, up2 = ancestral_step(s[:-1], safe, eta)
  fac = 1.0 / (2.0 * r)
  # Brownian increments: z2 = (sqrt(a) z1 + sqrt(b) z') / sqrt(a + b), a = sigma_i - sigma_s,
  # b = sigma_s - sigma_(i+1); independent draws use z' alone for the second.
  a, b = s[:-1] - sig_s, sig_s - safe
  span = np.where(a + b > 0, a + b, 1.0)  # 0 only on the Euler step into sigma = 0
  mix1 = np.sqrt(a / span) if noise == "brownian" else np.zeros_like(a)
  mix2 = np.sqrt(b / span) if noise == "brownian" else np.ones_like(a)
  consts = _consts(x.dtype, s=s[:-1], s_s=sig_s, down1=down1, up1=up1 * s_noise, down2=down2,
                   up2=up2 * s_noise, dt=nxt - s[:-1], mix1=mix1, mix2=mix2,
                   second=nxt > 0, i=np.arange(len(s) - 1))

  def step(x, c):
    d = denoise_fn(x, c["s"])

    def two_stage(_):
      z1 = _normal_per_sample(keys, 2 * c["i"], x.shape[1:], x.dtype)
      z_other = _normal_per_sample(keys, 2 * c["i"] + 1, x.shape[1:], x.dtype)
      x_2 = (c["down1"] / c["s"]) * x + (1.0 - c["down1"] / c["s"]) * d + z1 * c["up1"]
      d_2 = denoise_fn(x_2, c["s_s"])
      d_mix = (1.0 - fac) * d + fac * d_2
      z2 = c["mix1"] * z1 + c["mix2"] * z_other
      return (c["down2"] / c["s"]) * x + (1.0 - c["down2"] / c["s"]) * d_mix + z2 * c["up2"]

    return jax.lax.cond(c["second"], two_stage, lambda _: x + (x - d) / c["s"] * c["dt"], None)

  return scan_steps(step, x, consts)
