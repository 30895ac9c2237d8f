"""EDM's networks as denoisers: an inner network F (SongUNet or DhariwalUNet) behind one of
the preconditioners of EDM Table 1, D(x; sigma) = c_skip x + c_out F(c_in x; c_noise).

`EDMNet.apply(variables, x, sigma, class_labels=None, augment_labels=None, train=False)`:
x float32 [B, H, W, C] in the [-1, 1] data space, sigma [B] or a scalar, class_labels one-hot
[B, label_dim] (None on a conditional network means zeros, as the official code), returns D
with x's shape. iDDPM's inner network has 2C output channels; D uses the first C.
"""

from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from score_jax import precond, schedules
from score_jax.models.dhariwal import DhariwalUNet
from score_jax.models.songunet import SongUNet

ARCHS = {"SongUNet": SongUNet, "DhariwalUNet": DhariwalUNet}
PRECONDS = precond.PRECONDS


class EDMNet(nn.Module):
  model: nn.Module
  precond: str = "edm"
  img_channels: int = 3
  label_dim: int = 0
  sigma_data: float = 0.5
  beta_d: float = schedules.VP_BETA_D
  beta_min: float = schedules.VP_BETA_MIN
  M: int = 1000
  epsilon_t: float = 1e-5
  C_1: float = 0.001
  C_2: float = 0.008
  sigma_min: Optional[float] = None  # VE / EDM: the sampling range (defaults as official)
  sigma_max: Optional[float] = None

  @nn.compact
  def __call__(self, x, sigma, class_labels=None, augment_labels=None, train: bool = False):
    x = jnp.asarray(x, jnp.float32)
    sigma = jnp.broadcast_to(jnp.asarray(sigma, jnp.float32).reshape(-1), (x.shape[0],))
    if self.label_dim:
      class_labels = (jnp.zeros((1, self.label_dim), jnp.float32) if class_labels is None
                      else jnp.asarray(class_labels, jnp.float32).reshape(-1, self.label_dim))
      class_labels = jnp.broadcast_to(class_labels, (x.shape[0], self.label_dim))
    elif class_labels is not None:
      raise ValueError("class labels were given to an unconditional network (label_dim 0).")
    if self.precond == "vp":
      c = precond.vp_coefficients(sigma, self.beta_d, self.beta_min, self.M)
    elif self.precond == "ve":
      c = precond.ve_coefficients(sigma)
    elif self.precond == "edm":
      c = precond.edm_coefficients(sigma, self.sigma_data)
    elif self.precond == "iddpm":
      u = self.param("u", lambda k: jnp.asarray(precond.iddpm_u_table(self.M, self.C_1,
                                                                         self.C_2)))
      c = precond.iddpm_coefficients(sigma, jax.lax.stop_gradient(u))
    else:
      raise ValueError(f"precond={self.precond!r}; expected one of {precond.PRECONDS}.")
    c_skip, c_out, c_in, c_noise = c
    b = lambda v: v[:, None, None, None]
    f = self.model(b(c_in) * x, c_noise, class_labels, augment_labels, train)
    return b(c_skip) * x + b(c_out) * f[..., :self.img_channels].astype(jnp.float32)

  def sigma_range(self, variables=None):
    """(sigma_min, sigma_max) of the official class (iDDPM's from its u table)."""
    if self.precond == "vp":
      vp = schedules.vp_sigma(self.beta_d, self.beta_min)
      return float(vp(self.epsilon_t)), float(vp(1.0))
    if self.precond == "ve":
      return (0.02 if self.sigma_min is None else self.sigma_min,
              100.0 if self.sigma_max is None else self.sigma_max)
    if self.precond == "iddpm":
      u = (np.asarray(variables["params"]["u"]) if variables is not None
           else precond.iddpm_u_table(self.M, self.C_1, self.C_2))
      return float(u[self.M - 1]), float(u[0])
    return (0.0 if self.sigma_min is None else self.sigma_min,
            float("inf") if self.sigma_max is None else self.sigma_max)


def build(arch: str, precond_name: str, img_resolution: int, img_channels: int,
          label_dim: int = 0, augment_dim: int = 0, precond_kwargs: Optional[dict] = None,
          **net_kwargs) -> EDMNet:
  """An EDMNet from the official class names' arguments (EDMPrecond(model_type=...))."""
  if arch not in ARCHS:
    raise ValueError(f"model_type={arch!r}; expected one of {sorted(ARCHS)}.")
  out_channels = img_channels * (2 if precond_name == "iddpm" else 1)
  inner = ARCHS[arch](img_resolution=img_resolution, in_channels=img_channels,
                      out_channels=out_channels, label_dim=label_dim,
                      augment_dim=augment_dim, **net_kwargs)
  return EDMNet(model=inner, precond=precond_name, img_channels=img_channels,
                label_dim=label_dim, **(precond_kwargs or {}))
