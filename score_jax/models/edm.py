"""EDM's networks as denoisers: an inner network F (SongUNet or DhariwalUNet) behind one of
the preconditioners of EDM Table 1, D(x; sigma) = c_skip x + c_out F(c_in x; c_noise).

`EDMNet.apply(variables, x, sigma, class_labels=None, augment_labels=None, train=False)`:
x float32 [B, H, W, C] in the [-1, 1] data space, sigma [B] or a scalar, class_labels one-hot
[B, label_dim] (None on a conditional network means zeros, as the official code), returns D
with x's shape. iDDPM's inner network has 2C output channels; D uses the first C.
"""

from typing import Any, Optional, Union

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from score_jax import precond as precond_lib
from score_jax.models.dhariwal import DhariwalUNet
from score_jax.models.songunet import SongUNet

ARCHS = {"SongUNet": SongUNet, "DhariwalUNet": DhariwalUNet}
PRECONDS = tuple(precond_lib.PRECONDITIONERS)


class EDMNet(nn.Module):
  """`precond` is a row of EDM Table 1 (`precond.PRECONDITIONERS`): its coefficients and
  sigma range; a row with a table (iDDPM's u) keeps it as the parameter 'u'."""
  model: nn.Module
  precond: Any = precond_lib.EDMPrecond()
  img_channels: int = 3
  label_dim: int = 0

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
    table = None
    if self.precond.table_size:
      table = jax.lax.stop_gradient(
          self.param("u", lambda k: jnp.asarray(self.precond.table())))
    c_skip, c_out, c_in, c_noise = self.precond.coefficients(sigma, table)
    b = lambda v: v[:, None, None, None]
    f = self.model(b(c_in) * x, c_noise, class_labels, augment_labels, train)
    return b(c_skip) * x + b(c_out) * f[..., :self.img_channels].astype(jnp.float32)

  def sigma_range(self, variables=None):
    """(sigma_min, sigma_max) of the official class (iDDPM's from the stored u table)."""
    table = None
    if self.precond.table_size and variables is not None:
      table = np.asarray(variables["params"]["u"])
    return self.precond.sigma_range(table)


def build(arch: str, precond: Union[str, Any], img_resolution: int, img_channels: int,
          label_dim: int = 0, augment_dim: int = 0, precond_kwargs: Optional[dict] = None,
          **net_kwargs) -> EDMNet:
  """An EDMNet from the official class names' arguments (EDMPrecond(model_type=...)).

  `precond`: a `precond.PRECONDITIONERS` object, or its name with `precond_kwargs`."""
  if arch not in ARCHS:
    raise ValueError(f"model_type={arch!r}; expected one of {sorted(ARCHS)}.")
  if isinstance(precond, str):
    precond = precond_lib.preconditioner(precond, **(precond_kwargs or {}))
  out_channels = img_channels * (2 if precond.table_size else 1)
  inner = ARCHS[arch](img_resolution=img_resolution, in_channels=img_channels,
                      out_channels=out_channels, label_dim=label_dim,
                      augment_dim=augment_dim, **net_kwargs)
  return EDMNet(model=inner, precond=precond, img_channels=img_channels, label_dim=label_dim)
