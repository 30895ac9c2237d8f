"""The DDPM U-Net (Ho et al. 2020, App. B): epsilon_theta(x_t, t), NHWC.

A PixelCNN++-style U-Net with GroupNorm, sinusoidal timestep embedding added in every
residual block, and self-attention at chosen levels and in the middle. Submodule names are
those of diffusers' `UNet2DModel` (`down_blocks_1/resnets_0/conv1`, `mid_block/attentions_0`,
...), the format of the published google/ddpm-* weights, so that `importers.diffusers` maps
a state dict onto the parameter tree by a mechanical rename.

Initialisation follows the original TensorFlow code: variance scaling (fan_avg, uniform) and
near-zero (scale 1e-10) for the last convolution of each residual block, the attention
output projection and the output convolution, so that every block starts as the identity.
"""

import math
from typing import Any, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from score_jax.models import remat as remat_lib


def _init(scale: float = 1.0):
  return nn.initializers.variance_scaling(max(scale, 1e-10), "fan_avg", "uniform")


def timestep_embedding(t, dim: int, freq_shift: float = 1.0, flip_sin_to_cos: bool = False,
                       max_period: float = 10000.0):
  """Sinusoidal embedding of t [B] (any real dtype) -> [B, dim] float32.

  f_k = exp(-ln(max_period) k / (dim / 2 - freq_shift)), k < dim / 2; [sin(t f), cos(t f)]
  ([cos, sin] with flip_sin_to_cos). freq_shift 1 is the original code's `/(half - 1)`.
  Computed in float32 as the original and diffusers do, whatever the model's dtype.
  """
  half = dim // 2
  exponent = -math.log(max_period) * jnp.arange(half, dtype=jnp.float32) / (half - freq_shift)
  args = jnp.asarray(t, jnp.float32)[:, None] * jnp.exp(exponent)[None, :]
  emb = jnp.concatenate([jnp.sin(args), jnp.cos(args)], axis=-1)
  if flip_sin_to_cos:
    emb = jnp.concatenate([emb[:, half:], emb[:, :half]], axis=-1)
  if dim % 2:
    emb = jnp.pad(emb, ((0, 0), (0, 1)))
  return emb


# Every layer computes in the dtype of its input (float32 parameters are cast to it), as the
# RefineNet and EDM layers do: DDPMUNet.dtype casts the image once at the entry.
def _conv(features, name, dtype, kernel=3, stride=1, padding=1, scale=1.0):
  pad = ((padding, padding), (padding, padding)) if isinstance(padding, int) else padding
  return nn.Conv(features, (kernel, kernel), (stride, stride), padding=pad,
                 kernel_init=_init(scale), dtype=dtype, name=name)


def _group_norm(groups, eps, name, dtype):
  # Flax's norms take their statistics in float32 whatever `dtype` is.
  return nn.GroupNorm(groups, epsilon=eps, dtype=dtype, name=name)


class TimeEmbedding(nn.Module):
  """Dense-SiLU-Dense on the sinusoidal embedding."""
  features: int

  @nn.compact
  def __call__(self, emb):
    h = nn.silu(nn.Dense(self.features, kernel_init=_init(), name="linear_1")(emb))
    return nn.Dense(self.features, kernel_init=_init(), name="linear_2")(h)


class ResnetBlock(nn.Module):
  """GN-SiLU-conv, + Dense(SiLU(temb)), GN-SiLU-dropout-conv; 1x1 shortcut when C changes."""
  features: int
  groups: int
  eps: float
  dropout: float
  split_skip_gradient: bool = False  # with remat: see remat.join

  @nn.compact
  def __call__(self, x, temb, train: bool, encoder_features=None):
    """x [B, H, W, C] -> [B, H, W, features]; temb [B, E]. encoder_features [B, H, W, C']:
    the up path's skip input, joined after x inside the block, so that remat keeps the two
    halves (kept anyway) instead of their C + C' wide concatenation."""
    if encoder_features is not None:
      x = remat_lib.join(x, encoder_features, self.split_skip_gradient)
    dt = x.dtype
    h = nn.silu(_group_norm(self.groups, self.eps, "norm1", dt)(x))
    h = _conv(self.features, "conv1", dt)(h)
    proj = nn.Dense(self.features, kernel_init=_init(), dtype=dt,
                    name="time_emb_proj")(nn.silu(temb))
    h = h + proj[:, None, None, :].astype(dt)
    h = nn.silu(_group_norm(self.groups, self.eps, "norm2", dt)(h))
    h = nn.Dropout(self.dropout, deterministic=not train)(h)
    h = _conv(self.features, "conv2", dt, scale=1e-10)(h)
    if x.shape[-1] != self.features:
      x = _conv(self.features, "conv_shortcut", dt, kernel=1, padding=0)(x)
    return x + h


class AttnBlock(nn.Module):
  """Self-attention over the H*W positions, residual. head_dim None: one head of all C."""
  groups: int
  eps: float
  head_dim: Optional[int]

  @nn.compact
  def __call__(self, x):
    b, hh, ww, c = x.shape
    d = c if not self.head_dim else self.head_dim
    if c % d:
      raise ValueError(f"attention over {c} channels cannot be split into heads of {d}.")
    heads = c // d
    dense = lambda name, scale=1.0: nn.Dense(c, kernel_init=_init(scale), dtype=x.dtype,
                                             name=name)
    n = _group_norm(self.groups, self.eps, "group_norm", x.dtype)(x).reshape(b, hh * ww, c)
    split = lambda y: y.reshape(b, hh * ww, heads, d)
    q, k, v = (split(dense(name)(n)) for name in ("to_q", "to_k", "to_v"))
    logits = jnp.einsum("bqhd,bkhd->bhqk", q, k).astype(jnp.float32) / math.sqrt(d)
    weights = jax.nn.softmax(logits, axis=-1).astype(v.dtype)
    out = jnp.einsum("bhqk,bkhd->bqhd", weights, v).reshape(b, hh * ww, c)
    out = dense("to_out_0", 1e-10)(out)
    return x + out.reshape(x.shape)


def _blocks(remat: bool):
  """(ResnetBlock, AttnBlock), recomputed in the backward pass when remat."""
  return (remat_lib.maybe(ResnetBlock, remat, static_argnums=(3,)),  # train
          remat_lib.maybe(AttnBlock, remat))


class Downsample(nn.Module):
  """Halve H and W: a stride-2 3x3 conv (learned) or 2x2 average pooling (fixed).

  padding 0 pads one row/column at the bottom/right only, as the original code's 'SAME'
  stride-2 convolution and diffusers' `downsample_padding=0`; 1 pads symmetrically.
  """
  with_conv: bool
  padding: int = 0

  @nn.compact
  def __call__(self, x):
    if not self.with_conv:
      return nn.avg_pool(x, (2, 2), (2, 2))
    pad = ((0, 1), (0, 1)) if self.padding == 0 else self.padding
    return _conv(x.shape[-1], "conv", x.dtype, stride=2, padding=pad)(x)


class Upsample(nn.Module):
  """Double H and W by nearest neighbour, then a 3x3 conv when learned."""
  with_conv: bool

  @nn.compact
  def __call__(self, x):
    x = jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)
    return _conv(x.shape[-1], "conv", x.dtype)(x) if self.with_conv else x


class DownBlock(nn.Module):
  features: int
  num_res_blocks: int
  attention: bool
  downsample: bool
  groups: int
  attn_groups: int
  eps: float
  dropout: float
  head_dim: Optional[int]
  resamp_with_conv: bool
  downsample_padding: int
  remat: bool = False

  @nn.compact
  def __call__(self, h, temb, train):
    resnet_block, attn_block = _blocks(self.remat)
    skips = []
    for j in range(self.num_res_blocks):
      h = resnet_block(self.features, self.groups, self.eps, self.dropout,
                      name=f"resnets_{j}")(h, temb, train)
      if self.attention:
        h = attn_block(self.attn_groups, self.eps, self.head_dim, name=f"attentions_{j}")(h)
      skips.append(h)
    if self.downsample:
      h = Downsample(self.resamp_with_conv, self.downsample_padding, name="downsamplers_0")(h)
      skips.append(h)
    return h, skips


class UpBlock(nn.Module):
  features: int
  num_res_blocks: int
  attention: bool
  upsample: bool
  groups: int
  attn_groups: int
  eps: float
  dropout: float
  head_dim: Optional[int]
  resamp_with_conv: bool
  remat: bool = False

  @nn.compact
  def __call__(self, h, skips, temb, train):
    resnet_block, attn_block = _blocks(self.remat)
    for k in range(self.num_res_blocks + 1):
      h = resnet_block(self.features, self.groups, self.eps, self.dropout,
                       split_skip_gradient=self.remat, name=f"resnets_{k}")(
                           h, temb, train, skips.pop())
      if self.attention:
        h = attn_block(self.attn_groups, self.eps, self.head_dim, name=f"attentions_{k}")(h)
    if self.upsample:
      h = remat_lib.maybe(Upsample, self.remat)(self.resamp_with_conv, name="upsamplers_0")(h)
    return h


class MidBlock(nn.Module):
  features: int
  groups: int
  attn_groups: int
  eps: float
  dropout: float
  head_dim: Optional[int]
  attention: bool = True
  remat: bool = False

  @nn.compact
  def __call__(self, h, temb, train):
    resnet_block, attn_block = _blocks(self.remat)
    h = resnet_block(self.features, self.groups, self.eps, self.dropout,
                     name="resnets_0")(h, temb, train)
    if self.attention:
      h = attn_block(self.attn_groups, self.eps, self.head_dim, name="attentions_0")(h)
    return resnet_block(self.features, self.groups, self.eps, self.dropout,
                       name="resnets_1")(h, temb, train)


def _output_head(unet: "DDPMUNet", h):
  """GN-SiLU-conv to the output channels. A function of the module (its layers keep their
  top-level names) so that remat can take it: it recomputes two full-resolution
  activations instead of keeping them."""
  h = nn.silu(_group_norm(unet.num_groups, unet.norm_eps, "conv_norm_out", unet.dtype)(h))
  return _conv(unet.out_channels, "conv_out", unet.dtype, scale=1e-10)(h)


class DDPMUNet(nn.Module):
  """epsilon_theta(x [B, H, W, C], t [B] timestep index 0..T-1) -> [B, H, W, out_channels].

  Attributes:
    out_channels: channels of the output (the image's).
    block_out_channels: channels at each level, ch * ch_mult (CIFAR-10: 128, 256, 256, 256).
    num_res_blocks: residual blocks per level on the way down (one more on the way up).
    attn_levels: level indices (0 = full resolution) with self-attention; CIFAR-10's 16x16
      is level 1.
    dropout: rate inside the residual blocks (CIFAR-10: 0.1), active with train=True.
    num_groups, norm_eps: GroupNorm settings (32, 1e-6 in the original).
    mid_attention, mid_attn_num_groups: whether the middle block has self-attention and its
      GroupNorm's groups (None: num_groups); diffusers' `add_attention`, `attn_norm_num_groups`.
    attention_head_dim: channels per attention head; None for one head over all channels
      (the original code).
    resamp_with_conv: learned (conv) or fixed (average pool / nearest) resampling.
    downsample_padding: 0 (original, bottom/right only) or 1 (symmetric).
    freq_shift, flip_sin_to_cos: the timestep embedding's variant (original: 1, False).
    dtype: the compute dtype of the convolutions, norms and attention (bfloat16 for mixed
      precision); parameters, the timestep embedding's MLP, softmax and the returned
      epsilon stay float32.
    remat: recompute each residual and attention block, the upsamplers and the output head
      in the backward pass (memory).
  """
  out_channels: int = 3
  block_out_channels: Sequence[int] = (128, 256, 256, 256)
  num_res_blocks: int = 2
  attn_levels: Sequence[int] = (1,)
  dropout: float = 0.0
  num_groups: int = 32
  mid_attention: bool = True
  mid_attn_num_groups: Optional[int] = None
  norm_eps: float = 1e-6
  attention_head_dim: Optional[int] = None
  resamp_with_conv: bool = True
  downsample_padding: int = 0
  freq_shift: float = 1.0
  flip_sin_to_cos: bool = False
  dtype: Any = jnp.float32
  remat: bool = False

  @nn.compact
  def __call__(self, x, t, train: bool = False):
    x = jnp.asarray(x, self.dtype)
    chans = tuple(self.block_out_channels)
    levels = len(chans)
    t = jnp.broadcast_to(jnp.asarray(t), (x.shape[0],))
    emb = timestep_embedding(t, chans[0], self.freq_shift, self.flip_sin_to_cos)
    temb = TimeEmbedding(4 * chans[0], name="time_embedding")(emb).astype(x.dtype)
    common = dict(groups=self.num_groups, attn_groups=self.num_groups, eps=self.norm_eps,
                  dropout=self.dropout, head_dim=self.attention_head_dim, remat=self.remat)
    h = _conv(chans[0], "conv_in", self.dtype)(x)
    skips = [h]
    for i in range(levels):
      h, block_skips = DownBlock(chans[i], self.num_res_blocks, i in self.attn_levels,
                                 i < levels - 1, resamp_with_conv=self.resamp_with_conv,
                                 downsample_padding=self.downsample_padding,
                                 name=f"down_blocks_{i}", **common)(h, temb, train)
      skips += block_skips
    mid = dict(common, attn_groups=self.mid_attn_num_groups or self.num_groups)
    h = MidBlock(chans[-1], attention=self.mid_attention, name="mid_block", **mid)(h, temb, train)
    for j in range(levels):
      i = levels - 1 - j
      h = UpBlock(chans[i], self.num_res_blocks, i in self.attn_levels, j < levels - 1,
                  resamp_with_conv=self.resamp_with_conv, name=f"up_blocks_{j}",
                  **common)(h, skips, temb, train)
    return remat_lib.maybe(_output_head, self.remat)(self, h).astype(jnp.float32)
