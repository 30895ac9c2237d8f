"""Building blocks of the NCSN / NCSNv2 RefineNets, in NHWC.

Submodule names follow the attribute names of the official PyTorch code (`conv1`,
`normalize2`, `adapt_convs_0`, `1_1_conv`, ...) so that a PyTorch state dict maps onto the
Flax parameter tree by a mechanical rename (see `score_jax.convert`).
"""

import functools
from typing import Callable, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

_NORM_EPS = 1e-5  # the eps of torch.nn.InstanceNorm2d, used by InstanceNorm++ too


def torch_uniform_init(fan_in: int):
  """PyTorch's default Conv2d/Linear init: U(-1/sqrt(fan_in), 1/sqrt(fan_in)).

  kaiming_uniform with a=sqrt(5) reduces to this bound for the weight, and PyTorch draws
  the bias from the same range; matching it keeps training dynamics those of the reference.
  """
  bound = 1.0 / np.sqrt(fan_in)

  def init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, -bound, bound)

  return init


class Conv(nn.Module):
  """2-D convolution with PyTorch's explicit zero padding, dilation and init.

  Params are `kernel` [k, k, C_in, C_out] and `bias` [C_out] directly on this module, so a
  PyTorch `conv.weight` maps to one Flax leaf.
  """
  features: int
  kernel_size: int = 3
  dilation: int = 1
  use_bias: bool = True

  @nn.compact
  def __call__(self, x):
    k = self.kernel_size
    init = torch_uniform_init(x.shape[-1] * k * k)
    kernel = self.param("kernel", init, (k, k, x.shape[-1], self.features))
    pad = self.dilation * (k // 2)
    y = jax.lax.conv_general_dilated(
        x, kernel.astype(x.dtype), window_strides=(1, 1), padding=((pad, pad), (pad, pad)),
        rhs_dilation=(self.dilation, self.dilation),
        dimension_numbers=("NHWC", "HWIO", "NHWC"))
    if self.use_bias:
      y = y + self.param("bias", init, (self.features,)).astype(x.dtype)
    return y


def elu(x):
  """ELU (alpha 1), `nn.elu`'s values to 1.2e-7 absolute, with a CPU-only formula.

  XLA:CPU's expm1 is a slow scalar-ish polynomial: `exp(x) - 1` on the negative side took
  half the time forward and under a third with its gradient (0.30 -> 0.15 ms and 0.52 ->
  0.15 ms at [16, 32, 32, 32]), and ELUs follow every norm of the RefineNets. The
  difference from expm1 is exp's rounding near 0, a few 1e-8 absolute. Other platforms run
  `nn.elu` as XLA does it.
  """
  return jax.lax.platform_dependent(x, cpu=_elu_cpu, default=nn.elu)


def _elu_cpu(x):
  # exp of the negative side only: exp(x) of a large positive x would overflow in the unused
  # branch, and its NaN gradient would leak through jnp.where's other side. In float32: in
  # bfloat16, exp(x) - 1 near 0 would round to multiples of 2^-8 where expm1 keeps x.
  neg = jnp.exp(jnp.where(x > 0, 0.0, x).astype(jnp.float32)) - 1
  return jnp.where(x > 0, x, neg.astype(x.dtype))


def _instance_norm_plus(x, gamma, alpha, beta):
  """InstanceNorm++ (NCSN Sec. A.1) for x of shape [B, H, W, C]; params broadcast to [B?, C].

  Plain instance norm discards each channel's mean; ++ adds back the channel means, normalised
  across channels, scaled by alpha. The variance across channels is the unbiased one
  (torch.var's default), the per-channel variance the biased one (InstanceNorm2d's).
  Statistics are taken in float32 and the result has x's dtype (bfloat16 compute).
  """
  dtype, x = x.dtype, x.astype(jnp.float32)
  means = jnp.mean(x, axis=(1, 2))  # [B, C]
  m = jnp.mean(means, axis=-1, keepdims=True)
  v = jnp.var(means, axis=-1, keepdims=True, ddof=1)
  means = (means - m) / jnp.sqrt(v + _NORM_EPS)
  mu = jnp.mean(x, axis=(1, 2), keepdims=True)
  var = jnp.var(x, axis=(1, 2), keepdims=True)
  h = (x - mu) / jnp.sqrt(var + _NORM_EPS)
  h = h + means[:, None, None, :] * _per_sample(alpha)
  out = _per_sample(gamma) * h
  if beta is not None:
    out = out + _per_sample(beta)
  return out.astype(dtype)


def _per_sample(p):
  """[C] -> [1, 1, 1, C]; [B, C] -> [B, 1, 1, C]."""
  return p.reshape((-1, 1, 1, p.shape[-1]))


class InstanceNormPlus(nn.Module):
  """Unconditional InstanceNorm++ (NCSNv2 Technique 3). Params alpha, gamma ~ N(1, 0.02)."""
  bias: bool = True

  @nn.compact
  def __call__(self, x, y=None):
    del y  # unconditional: the noise level reaches the network only through 1/sigma.
    c = x.shape[-1]
    near_one = lambda key, shape: 1.0 + 0.02 * jax.random.normal(key, shape)
    alpha = self.param("alpha", near_one, (c,))
    gamma = self.param("gamma", near_one, (c,))
    beta = self.param("beta", nn.initializers.zeros, (c,)) if self.bias else None
    return _instance_norm_plus(x, gamma, alpha, beta)


class CondInstanceNormPlus(nn.Module):
  """CondInstanceNorm++ (NCSN): gamma, alpha, beta looked up per noise-level index y.

  The table is one embedding of width 3C (2C without bias) laid out [gamma | alpha | beta],
  as the official code stores it.
  """
  num_classes: int
  bias: bool = True

  @nn.compact
  def __call__(self, x, y):
    c = x.shape[-1]
    n = 3 if self.bias else 2

    def init(key, shape):
      table = 1.0 + 0.02 * jax.random.normal(key, shape)
      return table.at[:, 2 * c:].set(0.0)

    table = self.param("embed", init, (self.num_classes, n * c))
    params = table[y]  # [B, n*C]
    gamma, alpha = params[:, :c], params[:, c:2 * c]
    beta = params[:, 2 * c:] if self.bias else None
    return _instance_norm_plus(x, gamma, alpha, beta)


def mean_pool2(x):
  """2x2 mean pooling as the official ConvMeanPool does it (strided views, odd sizes allowed)."""
  return (x[:, ::2, ::2] + x[:, 1::2, ::2] + x[:, ::2, 1::2] + x[:, 1::2, 1::2]) / 4.0


class ConvMeanPool(nn.Module):
  """Convolution then 2x2 mean pooling; `adjust_padding` pads top/left by one (28x28 inputs)."""
  features: int
  kernel_size: int = 3
  adjust_padding: bool = False

  @nn.compact
  def __call__(self, x):
    if self.adjust_padding:
      x = jnp.pad(x, ((0, 0), (1, 0), (1, 0), (0, 0)))
    x = Conv(self.features, self.kernel_size, name="conv")(x)
    return mean_pool2(x)


class ResidualBlock(nn.Module):
  """Pre-activation ResNet block: norm, act, conv, norm, act, conv, plus a shortcut.

  With `resample='down'` and no dilation the second conv and the shortcut mean-pool by 2.
  With a dilation, 'down' only changes where the channel change happens: the official code
  keeps the resolution and widens the receptive field instead (NCSN Appendix A).
  `norm` builds a normaliser called as norm(x, y); y is the noise-level index or None.
  """
  output_dim: int
  norm: Callable[..., nn.Module]
  act: Callable = elu
  resample: Optional[str] = None
  dilation: Optional[int] = None
  adjust_padding: bool = False

  @nn.compact
  def __call__(self, x, y=None):
    input_dim = x.shape[-1]
    if self.resample not in (None, "down"):
      raise ValueError(f"resample={self.resample!r}; expected None or 'down'.")
    dil = self.dilation or 1
    down = self.resample == "down"
    if down and self.dilation is None:
      conv1 = Conv(input_dim, 3, name="conv1")
      conv2 = ConvMeanPool(self.output_dim, 3, self.adjust_padding, name="conv2")
      shortcut = lambda: ConvMeanPool(self.output_dim, 1, self.adjust_padding, name="shortcut")
    else:
      mid = input_dim if down else self.output_dim
      conv1 = Conv(mid, 3, dil, name="conv1")
      conv2 = Conv(self.output_dim, 3, dil, name="conv2")
      k = 3 if self.dilation is not None else 1
      shortcut = lambda: Conv(self.output_dim, k, dil, name="shortcut")

    h = self.act(self.norm(name="normalize1")(x, y))
    h = conv1(h)
    h = self.act(self.norm(name="normalize2")(h, y))
    h = conv2(h)
    if self.output_dim == input_dim and not down:
      return x + h
    return shortcut()(x) + h


class RCUBlock(nn.Module):
  """Residual conv units of RefineNet: n_blocks x (n_stages x [norm?, act, conv]) + skip."""
  n_blocks: int
  n_stages: int
  act: Callable = elu
  norm: Optional[Callable[..., nn.Module]] = None

  @nn.compact
  def __call__(self, x, y=None):
    features = x.shape[-1]
    for i in range(self.n_blocks):
      residual = x
      for j in range(self.n_stages):
        if self.norm is not None:
          x = self.norm(name=f"{i + 1}_{j + 1}_norm")(x, y)
        x = self.act(x)
        x = Conv(features, 3, use_bias=False, name=f"{i + 1}_{j + 1}_conv")(x)
      x = x + residual
    return x


_POOL = 5  # CRP pools over 5x5 windows, stride 1, padded to keep the size
_HALF = _POOL // 2


def max_pool5(x):
  """5x5 max pooling, stride 1, 'same' size, for x of shape [B, H, W, C]: `nn.max_pool`,
  with a CPU-only gradient rule (`_max_pool5_cpu`); other platforms run XLA's own."""
  return jax.lax.platform_dependent(x, cpu=_max_pool5_cpu, default=_max_pool5_xla)


def _max_pool5_xla(x):
  return nn.max_pool(x, (_POOL, _POOL), strides=(1, 1), padding=((_HALF, _HALF),) * 2)


def _max_pool5_cpu(x):
  """Same values and the same gradient as `nn.max_pool`: each window's gradient goes to its
  first maximum in row-major order, as XLA's select-and-scatter and torch's max_pool2d do.
  XLA on CPU runs select-and-scatter element by element (29% of the MNIST train step), so
  here the pool is two 1-D pools, along each row (W) and then down each column (H), each
  with a gather-based gradient over its 5 offsets (`_max_pool5_1d`). In that order the
  gradient reaches the first row holding the window's maximum, and in that row its first
  column: the row-major first maximum. Reverse mode only.
  """
  return _max_pool5_1d(_max_pool5_1d(x, 2), 1)


def _shift(a, axis: int, start: int, size: int):
  return jax.lax.slice_in_dim(a, start, start + size, axis=axis)


def _pad_axis(a, axis: int, value):
  pads = [(0, 0)] * a.ndim
  pads[axis] = (_HALF, _HALF)
  return jnp.pad(a, pads, constant_values=value)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def _max_pool5_1d(x, axis: int):
  """Max over 5 neighbours along `axis` (stride 1, -inf padding, same size)."""
  return _max_pool5_1d_fwd(x, axis)[0]


def _max_pool5_1d_fwd(x, axis):
  n = x.shape[axis]
  xp = _pad_axis(x, axis, -jnp.inf)
  y = functools.reduce(jnp.maximum, [_shift(xp, axis, k, n) for k in range(_POOL)])
  return y, (xp, y)


def _max_pool5_1d_bwd(axis, res, g):
  xp, y = res
  n = y.shape[axis]
  # Which offset each output took its maximum from: the first, in scan order.
  first = jnp.full(y.shape, _POOL, jnp.int8)
  for k in reversed(range(_POOL)):
    first = jnp.where(_shift(xp, axis, k, n) == y, jnp.int8(k), first)
  # Input i sits at offset k of the window of output i + HALF - k: gather those gradients.
  gp, fp = _pad_axis(g, axis, 0), _pad_axis(first, axis, _POOL)
  gx = jnp.zeros_like(g)
  for k in range(_POOL):
    start = 2 * _HALF - k
    gx = gx + jnp.where(_shift(fp, axis, start, n) == k, _shift(gp, axis, start, n), 0)
  return (gx,)


_max_pool5_1d.defvjp(_max_pool5_1d_fwd, _max_pool5_1d_bwd)


def _avg_pool5(x):
  # count_include_pad: the border divides by 25 as torch.nn.AvgPool2d does by default.
  return nn.avg_pool(x, (5, 5), strides=(1, 1), padding=((2, 2), (2, 2)),
                     count_include_pad=True)


class CRPBlock(nn.Module):
  """Chained residual pooling: act, then n_stages x (pool 5x5, conv) summed onto x."""
  n_stages: int
  act: Callable = elu
  maxpool: bool = True
  norm: Optional[Callable[..., nn.Module]] = None

  @nn.compact
  def __call__(self, x, y=None):
    features = x.shape[-1]
    pool = max_pool5 if self.maxpool else _avg_pool5
    x = self.act(x)
    path = x
    for i in range(self.n_stages):
      if self.norm is not None:
        path = self.norm(name=f"norms_{i}")(path, y)
      path = pool(path)
      path = Conv(features, 3, use_bias=False, name=f"convs_{i}")(path)
      x = path + x
    return x


def _align_corners_matrix(n_out: int, n_in: int) -> np.ndarray:
  """[n_out, n_in] linear-interpolation weights with align_corners=True."""
  if n_out == 1:
    pos = np.zeros(1)
  else:
    pos = np.arange(n_out) * (n_in - 1) / (n_out - 1)
  lo = np.clip(np.floor(pos).astype(int), 0, n_in - 1)
  hi = np.minimum(lo + 1, n_in - 1)
  frac = pos - lo
  w = np.zeros((n_out, n_in))
  w[np.arange(n_out), lo] += 1.0 - frac
  w[np.arange(n_out), hi] += frac
  return w


def resize_bilinear_align_corners(x, size: Sequence[int]):
  """Bilinear resize of [B, H, W, C] to `size` with corner pixels aligned.

  jax.image.resize uses half-pixel centres; RefineNet's fusion (F.interpolate,
  align_corners=True) does not, and the difference is visible at the fixture's 1e-4.
  """
  wh = jnp.asarray(_align_corners_matrix(size[0], x.shape[1]), x.dtype)
  ww = jnp.asarray(_align_corners_matrix(size[1], x.shape[2]), x.dtype)
  return jnp.einsum("Hh,bhwc,Ww->bHWc", wh, x, ww)


class MSFBlock(nn.Module):
  """Multi-resolution fusion: conv each input to `features`, upsample, sum."""
  features: int
  norm: Optional[Callable[..., nn.Module]] = None

  @nn.compact
  def __call__(self, xs, shape, y=None):
    total = 0.0
    for i, x in enumerate(xs):
      if self.norm is not None:
        x = self.norm(name=f"norms_{i}")(x, y)
      h = Conv(self.features, 3, use_bias=True, name=f"convs_{i}")(x)
      total = total + resize_bilinear_align_corners(h, shape)
    return total


class RefineBlock(nn.Module):
  """RefineNet block: RCU per input, fusion, chained residual pooling, output RCU.

  With `norm` set (NCSN) every stage is normalised and conditioned on y and pooling is
  average; without (NCSNv2) there are no norms and pooling is max (NCSNv2 App. B.1).
  """
  features: int
  act: Callable = elu
  start: bool = False
  end: bool = False
  norm: Optional[Callable[..., nn.Module]] = None

  @nn.compact
  def __call__(self, xs, output_shape, y=None):
    hs = [RCUBlock(2, 2, self.act, self.norm, name=f"adapt_convs_{i}")(x, y)
          for i, x in enumerate(xs)]
    if len(hs) > 1:
      h = MSFBlock(self.features, self.norm, name="msf")(hs, output_shape, y)
    else:
      h = hs[0]
    h = CRPBlock(2, self.act, maxpool=self.norm is None, norm=self.norm, name="crp")(h, y)
    return RCUBlock(3 if self.end else 1, 2, self.act, self.norm, name="output_convs")(h, y)
