"""The probability-flow ODE dx/dsigma = (x - D(x; sigma)) / sigma, solved by diffrax.

Integrated in t = log sigma, where it reads dx/dt = x - D(x; e^t): the sigmas of a sampling
run span five orders of magnitude, and in log sigma an adaptive solver's steps are even.
`ode` is a sampler of the shared signature; `likelihood.ode_nll` integrates the same flow
forward with the divergence for exact log-densities.
"""

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import io_callback

from score_jax.samplers.kdiffusion import host_sigmas

# By diffrax's class names, imported when a solve is traced: every process that builds a
# sampler imports this registry, and diffrax (with equinox and lineax) adds 14.5 MB and 0.7 s
# (2-core CPU) to each one that never solves an ODE.
SOLVERS = {"tsit5": "Tsit5", "dopri5": "Dopri5", "heun": "Heun"}


class _CallCounter:
  """Counts a function's calls as the compiled program makes them, through ordered host
  callbacks: reset, one per call, read at the end. (diffrax's step count does not give the
  calls exactly: a rejected first step re-evaluates the FSAL stage.) Ordered effects need
  one device, so only `return_nfe` runs pay for them."""

  def __init__(self):
    self.n = 0

  def _io(self, fn):
    return io_callback(fn, jax.ShapeDtypeStruct((), jnp.int32), ordered=True)

  def reset(self):
    return self._io(self._reset)

  def _reset(self):
    self.n = 0
    return np.int32(0)

  def tick(self):
    return self._io(self._tick)

  def _tick(self):
    self.n += 1
    return np.int32(self.n)

  def read(self):
    return self._io(lambda: np.int32(self.n))


def solve_log_sigma(field, y0, log_s0: float, log_s1: float, solver: str, rtol: float,
                    atol: float, grid=None, max_steps: int = 4096, count: bool = False):
  """diffrax on dy/dt = field(t, y) from t = log_s0 to log_s1: adaptive (PID controller with
  rtol / atol) for 'tsit5' / 'dopri5', or on `grid` (log sigmas) with 'heun'. Returns (y at
  log_s1, the number of field evaluations when `count`, else None)."""
  if solver not in SOLVERS:
    raise ValueError(f"solver={solver!r}; expected one of {tuple(SOLVERS)}.")
  import diffrax  # pylint: disable=g-import-not-at-top
  counter = _CallCounter() if count else None

  def vector_field(t, y, args):
    del args
    if counter is not None:
      counter.tick()
    return field(t, y)

  if counter is not None:
    counter.reset()
  term = diffrax.ODETerm(vector_field)
  if solver == "heun":
    if grid is None:
      raise ValueError("solver='heun' steps on a fixed grid: give the sigmas.")
    controller, dt0 = diffrax.StepTo(ts=jnp.asarray(grid)), None
  else:
    # A first step of 1/50 of the range instead of diffrax's initial-step search.
    controller, dt0 = diffrax.PIDController(rtol=rtol, atol=atol), (log_s1 - log_s0) / 50.0
  sol = diffrax.diffeqsolve(term, getattr(diffrax, SOLVERS[solver])(), log_s0, log_s1, dt0, y0,
                            stepsize_controller=controller, max_steps=max_steps)
  return jax.tree.map(lambda a: a[-1], sol.ys), None if counter is None else counter.read()


def ode(denoise_fn, x, sigmas, key=None, sample_ids=None, solver: str = "tsit5",
        rtol: float = 1e-6, atol: float = 1e-6, return_nfe: bool = False):
  """The probability-flow ODE from sigmas[0] to sigmas[-1] (to the last sigma above 0 and
  then one denoising step when sigmas end with 0): adaptive Tsit5 or Dopri5 (`rtol`,
  `atol`), or Heun on the log-sigma grid of `sigmas`. With `return_nfe`, returns (x0, the
  number of denoiser calls, an int32 scalar)."""
  del key, sample_ids
  s = host_sigmas(sigmas)
  end = s[-1] if s[-1] > 0 else s[-2]
  grid = np.log(s[s > 0]) if solver == "heun" else None
  dtype = x.dtype

  def field(t, y):
    return y - denoise_fn(y, jnp.exp(t).astype(dtype))

  out, nfe = solve_log_sigma(field, x, float(np.log(s[0])), float(np.log(end)), solver, rtol,
                             atol, grid, count=return_nfe)
  if s[-1] == 0:
    out = denoise_fn(out, jnp.asarray(end, dtype))
    nfe = None if nfe is None else nfe + 1
  return (out, nfe) if return_nfe else out
