"""DhariwalUNet: ADM (Dhariwal & Nichol 2021) as EDM re-implemented it, NHWC.

Blocks use adaptive scale/shift, 64 channels per attention head (a block with fewer than 64
channels has no attention even where asked, as the official code), kaiming-uniform init.
Class labels are added after the mapping MLP, unscaled. Parameter paths follow the official
state dict (`enc_64x64_block0/...` is `model.enc.64x64_block0...`).
"""

import math
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from score_jax.models import edm_layers as L
from score_jax.models import remat as remat_lib


class DhariwalUNet(nn.Module):
  """(x [B, R, R, C_in], c_noise [B], class_labels [B, label_dim] or None, augment_labels
  [B, augment_dim] or None) -> [B, R, R, C_out] float32.

  dtype is the compute dtype of the blocks (bfloat16 for mixed precision; the noise and label
  embedding, attention softmax and parameters stay float32); remat recomputes each UNetBlock
  and the output head in the backward pass (memory)."""
  img_resolution: int
  in_channels: int
  out_channels: int
  label_dim: int = 0
  augment_dim: int = 0
  model_channels: int = 192
  channel_mult: Sequence[int] = (1, 2, 3, 4)
  channel_mult_emb: int = 4
  num_blocks: int = 3
  attn_resolutions: Sequence[int] = (32, 16, 8)
  dropout: float = 0.10
  label_dropout: float = 0.0
  dtype: Any = jnp.float32
  remat: bool = False

  @nn.compact
  def __call__(self, x, c_noise, class_labels=None, augment_labels=None, train: bool = False):
    x = jnp.asarray(x, self.dtype)
    unet_block = remat_lib.maybe(L.UNetBlock, self.remat, static_argnums=(3,))  # train
    emb_ch = self.model_channels * self.channel_mult_emb
    gain = math.sqrt(1 / 3)  # the official init_bias of every non-zero-initialised layer
    block = lambda feats, name, **kw: unet_block(
        feats, channels_per_head=64, dropout=self.dropout, winit=L.KAIMING,
        winit_zero=L.KAIMING_ZERO, bias_gain=gain, split_skip_gradient=self.remat, name=name,
        **kw)

    emb = L.positional_embedding(c_noise, self.model_channels)
    if self.augment_dim and augment_labels is not None:
      emb = emb + L.Linear(self.model_channels, use_bias=False, winit=L.KAIMING_ZERO,
                           name="map_augment")(augment_labels)
    emb = nn.silu(L.Linear(emb_ch, winit=L.KAIMING, bias_gain=gain, name="map_layer0")(emb))
    emb = L.Linear(emb_ch, winit=L.KAIMING, bias_gain=gain, name="map_layer1")(emb)
    if self.label_dim:
      labels = class_labels
      if train and self.label_dropout:
        keep = jax.random.uniform(self.make_rng("dropout"), (x.shape[0], 1)) >= self.label_dropout
        labels = labels * keep.astype(labels.dtype)
      emb = emb + L.Linear(emb_ch, use_bias=False,
                           winit=("kaiming_normal", math.sqrt(self.label_dim)),
                           name="map_label")(labels)
    emb = nn.silu(emb)

    skips = []
    cout = self.in_channels
    for level, mult in enumerate(self.channel_mult):
      res = self.img_resolution >> level
      tag = f"{res}x{res}"
      if level == 0:
        cout = self.model_channels * mult
        x = L.Conv2d(cout, 3, winit=L.KAIMING, bias_gain=gain, name=f"enc_{tag}_conv")(x)
      else:
        x = block(cout, f"enc_{tag}_down", down=True)(x, emb, train)
      skips.append(x)
      for i in range(self.num_blocks):
        cout = self.model_channels * mult
        x = block(cout, f"enc_{tag}_block{i}", attention=res in self.attn_resolutions)(
            x, emb, train)
        skips.append(x)

    for level, mult in reversed(list(enumerate(self.channel_mult))):
      res = self.img_resolution >> level
      tag = f"{res}x{res}"
      if level == len(self.channel_mult) - 1:
        x = block(cout, f"dec_{tag}_in0", attention=True)(x, emb, train)
        x = block(cout, f"dec_{tag}_in1")(x, emb, train)
      else:
        x = block(cout, f"dec_{tag}_up", up=True)(x, emb, train)
      for i in range(self.num_blocks + 1):
        cout = self.model_channels * mult
        x = block(cout, f"dec_{tag}_block{i}", attention=res in self.attn_resolutions)(
            x, emb, train, skips.pop())
    head = remat_lib.maybe(L.output_head, self.remat, static_argnums=(2, 3, 4, 5))
    return head(self, x, "out_norm", "out_conv", 1e-5, L.KAIMING_ZERO).astype(jnp.float32)
