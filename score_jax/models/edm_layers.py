"""The building blocks of EDM's networks (SongUNet, DhariwalUNet), NHWC, with the official
module and parameter names so that a state dict converts by renaming and transposing.

Parameters: `weight` (conv HWIO, linear [in, out]) and `bias`, initialised as the official
`weight_init` (xavier / kaiming, uniform / normal, times a gain). Resampling filters are
constants, not parameters (the official buffers are rebuilt from `resample_filter`).
"""

import math
from typing import Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from score_jax.models import remat as remat_lib

# (mode, gain) pairs of the official code.
XAVIER = ("xavier_uniform", 1.0)
XAVIER_ZERO = ("xavier_uniform", 1e-5)
XAVIER_ATTN = ("xavier_uniform", math.sqrt(0.2))
KAIMING = ("kaiming_uniform", math.sqrt(1 / 3))
KAIMING_ZERO = ("kaiming_uniform", 0.0)


def weight_init(mode: str, gain: float, fan_in: int, fan_out: int):
  """The official weight_init as a Flax initializer (any shape; fans given)."""
  def init(key, shape, dtype=jnp.float32):
    if mode == "xavier_uniform":
      bound = math.sqrt(6 / (fan_in + fan_out))
      w = jax.random.uniform(key, shape, dtype, -bound, bound)
    elif mode == "xavier_normal":
      w = math.sqrt(2 / (fan_in + fan_out)) * jax.random.normal(key, shape, dtype)
    elif mode == "kaiming_uniform":
      bound = math.sqrt(3 / fan_in)
      w = jax.random.uniform(key, shape, dtype, -bound, bound)
    elif mode == "kaiming_normal":
      w = math.sqrt(1 / fan_in) * jax.random.normal(key, shape, dtype)
    else:
      raise ValueError(f"unknown init mode {mode!r}")
    return gain * w
  return init


class Linear(nn.Module):
  """y = x W + b, W [in, out] (the official [out, in] transposed)."""
  features: int
  use_bias: bool = True
  winit: tuple = XAVIER
  bias_gain: float = 0.0

  @nn.compact
  def __call__(self, x):
    fan_in = x.shape[-1]
    w = self.param("weight", weight_init(*self.winit, fan_in, self.features),
                   (fan_in, self.features))
    y = x @ w.astype(x.dtype)
    if self.use_bias:
      b = self.param("bias", lambda k, s: self.bias_gain * weight_init(
          self.winit[0], 1.0, fan_in, self.features)(k, s), (self.features,))
      y = y + b.astype(x.dtype)
    return y


def _filter(resample_filter: Sequence[float]) -> np.ndarray:
  f = np.asarray(resample_filter, np.float32)
  return np.outer(f, f) / np.square(f.sum())


def _depthwise(x, f, stride: int, padding: int, transpose: bool):
  """x [B, H, W, C] with the 2-D filter f applied to every channel alone."""
  c = x.shape[-1]
  k = f.shape[0]
  w = jnp.asarray(np.tile(f[:, :, None, None], (1, 1, 1, c)), x.dtype)  # HWIO, I = 1
  if transpose:  # conv_transpose2d(stride 2, padding p) as a dilated-input conv
    pad = k - 1 - padding
    return jax.lax.conv_general_dilated(x, w[::-1, ::-1] * 4, (1, 1), ((pad, pad), (pad, pad)),
                                        lhs_dilation=(2, 2), feature_group_count=c,
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"))
  return jax.lax.conv_general_dilated(x, w, (stride, stride),
                                      ((padding, padding), (padding, padding)),
                                      feature_group_count=c,
                                      dimension_numbers=("NHWC", "HWIO", "NHWC"))


class Conv2d(nn.Module):
  """The official Conv2d: optional x2 up / down resampling by a fixed filter, then a
  kernel x kernel conv ('same' padding); kernel 0 = resampling only. fused_resample (NCSN++'s
  residual encoder) convolves first and filters with stride 2 after."""
  features: int
  kernel: int
  use_bias: bool = True
  up: bool = False
  down: bool = False
  resample_filter: Sequence[float] = (1, 1)
  fused_resample: bool = False
  winit: tuple = XAVIER
  bias_gain: float = 0.0

  @nn.compact
  def __call__(self, x):
    cin, k = x.shape[-1], self.kernel
    w = b = None
    if k:
      fan_in, fan_out = cin * k * k, self.features * k * k
      w = self.param("weight", weight_init(*self.winit, fan_in, fan_out),
                     (k, k, cin, self.features)).astype(x.dtype)
      if self.use_bias:
        b = self.param("bias", lambda key, s: self.bias_gain * weight_init(
            self.winit[0], 1.0, fan_in, fan_out)(key, s), (self.features,)).astype(x.dtype)
    f = _filter(self.resample_filter) if (self.up or self.down) else None
    f_pad = (f.shape[0] - 1) // 2 if f is not None else 0
    w_pad = k // 2
    conv = lambda x, pad: jax.lax.conv_general_dilated(
        x, w, (1, 1), ((pad, pad), (pad, pad)), dimension_numbers=("NHWC", "HWIO", "NHWC"))
    if self.fused_resample and self.up and w is not None:
      x = _depthwise(x, f, 2, max(f_pad - w_pad, 0), transpose=True)
      x = conv(x, max(w_pad - f_pad, 0))
    elif self.fused_resample and self.down and w is not None:
      x = conv(x, w_pad + f_pad)
      x = _depthwise(x, f, 2, 0, transpose=False)
    else:
      if self.up:
        x = _depthwise(x, f, 2, f_pad, transpose=True)
      if self.down:
        x = _depthwise(x, f, 2, f_pad, transpose=False)
      if w is not None:
        x = conv(x, w_pad)
    return x if b is None else x + b


class GroupNorm(nn.Module):
  """min(32, C // 4) groups of contiguous channels, biased variance, per-channel affine."""
  eps: float = 1e-5
  num_groups: int = 32
  min_channels_per_group: int = 4

  @nn.compact
  def __call__(self, x):
    c = x.shape[-1]
    g = min(self.num_groups, c // self.min_channels_per_group)
    weight = self.param("weight", nn.initializers.ones, (c,))
    bias = self.param("bias", nn.initializers.zeros, (c,))
    xg = x.reshape(x.shape[:-1] + (g, c // g)).astype(jnp.float32)
    axes = tuple(range(1, x.ndim - 1)) + (x.ndim,)
    mean = xg.mean(axis=axes, keepdims=True)
    var = jnp.square(xg - mean).mean(axis=axes, keepdims=True)
    y = ((xg - mean) * jax.lax.rsqrt(var + self.eps)).reshape(x.shape).astype(x.dtype)
    return y * weight.astype(x.dtype) + bias.astype(x.dtype)


class UNetBlock(nn.Module):
  """The official UNetBlock: GN-SiLU-conv (with resampling), the embedding as a shift (or
  scale and shift with adaptive_scale), GN-SiLU-dropout-conv, skip, and optional multi-head
  self-attention. num_heads 0 takes out // channels_per_head heads."""
  features: int
  up: bool = False
  down: bool = False
  attention: bool = False
  num_heads: Optional[int] = None
  channels_per_head: int = 64
  dropout: float = 0.0
  skip_scale: float = 1.0
  eps: float = 1e-5
  resample_filter: Sequence[float] = (1, 1)
  resample_proj: bool = False
  adaptive_scale: bool = True
  winit: tuple = XAVIER
  winit_zero: tuple = XAVIER_ZERO
  winit_attn: Optional[tuple] = None
  bias_gain: float = 0.0
  split_skip_gradient: bool = False  # with remat: see remat.join

  @nn.compact
  def __call__(self, x, emb, train: bool = False, encoder_features=None):
    """x [B, H, W, C] -> [B, H', W', features]; emb [B, E]. encoder_features [B, H, W, C']:
    the decoder's skip input, joined after x on the channel axis inside the block, so that
    remat keeps the two halves (kept anyway) instead of their C + C' wide concatenation."""
    if encoder_features is not None:
      x = remat_lib.join(x, encoder_features, self.split_skip_gradient)
    cin, out = x.shape[-1], self.features
    # Zero-initialised layers (conv1, proj) get zero biases; the others bias_gain's.
    conv_kw = dict(resample_filter=self.resample_filter)
    live = dict(conv_kw, bias_gain=self.bias_gain)
    h = Conv2d(out, 3, up=self.up, down=self.down, winit=self.winit, name="conv0", **live)(
        nn.silu(GroupNorm(eps=self.eps, name="norm0")(x)))
    p = Linear(out * (2 if self.adaptive_scale else 1), winit=self.winit,
               bias_gain=self.bias_gain, name="affine")(emb)[:, None, None, :].astype(h.dtype)
    norm1 = GroupNorm(eps=self.eps, name="norm1")
    if self.adaptive_scale:
      scale, shift = p[..., :out], p[..., out:]
      h = nn.silu(shift + norm1(h) * (scale + 1))
    else:
      h = nn.silu(norm1(h + p))
    h = nn.Dropout(self.dropout, deterministic=not train)(h)
    h = Conv2d(out, 3, winit=self.winit_zero, name="conv1", **conv_kw)(h)
    if out != cin or self.up or self.down:
      kernel = 1 if (self.resample_proj or out != cin) else 0
      x = Conv2d(out, kernel, up=self.up, down=self.down, winit=self.winit, name="skip",
                 **live)(x)
    x = (h + x) * self.skip_scale
    heads = (0 if not self.attention else
             self.num_heads if self.num_heads is not None else out // self.channels_per_head)
    if heads:
      b, hh, ww, _ = x.shape
      cph = out // heads
      qkv = Conv2d(out * 3, 1, winit=self.winit_attn or self.winit, name="qkv", **live)(
          GroupNorm(eps=self.eps, name="norm2")(x))
      # The official layout: channel = head * 3 * cph + c * 3 + (0 q | 1 k | 2 v).
      qkv = qkv.reshape(b, hh * ww, heads, cph, 3).astype(jnp.float32)
      q, k, v = qkv[..., 0], qkv[..., 1], qkv[..., 2]
      w = jax.nn.softmax(jnp.einsum("bqhc,bkhc->bhqk", q, k / math.sqrt(cph)), axis=-1)
      a = jnp.einsum("bhqk,bkhc->bqhc", w, v).reshape(b, hh, ww, out).astype(x.dtype)
      x = (Conv2d(out, 1, winit=self.winit_zero, name="proj", **conv_kw)(a) + x) * self.skip_scale
    return x


def output_head(net: nn.Module, x, norm: str, conv: str, eps: float, winit: tuple):
  """GN-SiLU-3x3 conv from x [B, H, W, C] to [B, H, W, net.out_channels]. A function of the
  network, whose names its two layers keep (`norm`, `conv`), so that remat can take it
  (`remat.maybe(output_head, ..., static_argnums=(2, 3, 4, 5))`): recomputed, the two
  full-resolution activations it reads are not kept."""
  h = nn.silu(GroupNorm(eps=eps, name=norm)(x))
  return Conv2d(net.out_channels, 3, winit=winit, name=conv)(h)


def positional_embedding(c_noise, num_channels: int, endpoint: bool = False,
                         max_positions: int = 10000):
  """[B] -> [B, num_channels]: [cos(c f), sin(c f)], f_i = (1/max_positions)^(i / (N/2 - e)),
  f in float32 as the official code computes it."""
  half = num_channels // 2
  freqs = np.arange(half, dtype=np.float32) / np.float32(half - (1 if endpoint else 0))
  freqs = (np.float32(1) / np.float32(max_positions)) ** freqs
  x = c_noise[:, None] * jnp.asarray(freqs, c_noise.dtype)[None, :]
  return jnp.concatenate([jnp.cos(x), jnp.sin(x)], axis=1)


def fourier_embedding(c_noise, freqs):
  """[B] -> [B, 2 len(freqs)]: [cos(c 2 pi f), sin(c 2 pi f)], 2 pi f first (float32)."""
  x = c_noise[:, None] * (np.float32(2 * np.pi) * freqs)[None, :].astype(c_noise.dtype)
  return jnp.concatenate([jnp.cos(x), jnp.sin(x)], axis=1)
