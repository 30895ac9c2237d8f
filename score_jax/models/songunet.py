"""SongUNet: DDPM++ and NCSN++ (Song et al. 2021) as EDM re-implemented them, NHWC.

DDPM++: positional embedding, standard encoder and decoder, [1, 1] resampling.
NCSN++: Fourier embedding, residual encoder (an extra fused-downsampling conv path), [1, 3, 3,
1] FIR resampling, channel_mult_noise 2. decoder_type 'skip' adds a progressive output path
(aux_up / aux_norm / aux_conv at every level). Parameter paths follow the official state
dict: `enc_16x16_block0/conv0/weight` is `model.enc.16x16_block0.conv0.weight`.
"""

import math
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from score_jax.models import edm_layers as L
from score_jax.models import remat as remat_lib


class FourierFreqs(nn.Module):
  """The NCSN++ embedding's random frequencies: a constant after initialisation (a buffer
  in the official code), so no gradient reaches it."""
  num: int
  scale: float = 16.0

  @nn.compact
  def __call__(self):
    freqs = self.param("freqs", lambda k, s: self.scale * jax.random.normal(k, s), (self.num,))
    return jax.lax.stop_gradient(freqs)


class SongUNet(nn.Module):
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
  model_channels: int = 128
  channel_mult: Sequence[int] = (1, 2, 2, 2)
  channel_mult_emb: int = 4
  num_blocks: int = 4
  attn_resolutions: Sequence[int] = (16,)
  dropout: float = 0.10
  label_dropout: float = 0.0
  dtype: Any = jnp.float32
  remat: bool = False
  embedding_type: str = "positional"
  channel_mult_noise: int = 1
  encoder_type: str = "standard"
  decoder_type: str = "standard"
  resample_filter: Sequence[int] = (1, 1)

  @nn.compact
  def __call__(self, x, c_noise, class_labels=None, augment_labels=None, train: bool = False):
    x = jnp.asarray(x, self.dtype)
    unet_block = remat_lib.maybe(L.UNetBlock, self.remat, static_argnums=(3,))  # train
    head = remat_lib.maybe(L.output_head, self.remat, static_argnums=(2, 3, 4, 5))
    if self.embedding_type not in ("positional", "fourier"):
      raise ValueError(f"embedding_type={self.embedding_type!r}; expected positional or fourier.")
    if self.encoder_type not in ("standard", "skip", "residual"):
      raise ValueError(f"encoder_type={self.encoder_type!r}; expected standard, skip or residual.")
    if self.decoder_type not in ("standard", "skip"):
      raise ValueError(f"decoder_type={self.decoder_type!r}; expected standard or skip.")
    emb_ch = self.model_channels * self.channel_mult_emb
    noise_ch = self.model_channels * self.channel_mult_noise
    rf = tuple(self.resample_filter)
    block = lambda feats, name, **kw: unet_block(
        feats, num_heads=1, dropout=self.dropout, skip_scale=math.sqrt(0.5), eps=1e-6,
        resample_filter=rf, resample_proj=True, adaptive_scale=False, winit=L.XAVIER,
        winit_zero=L.XAVIER_ZERO, winit_attn=L.XAVIER_ATTN, split_skip_gradient=self.remat,
        name=name, **kw)

    # Mapping: the embedding's halves swapped (sin first), labels scaled by sqrt(label_dim).
    if self.embedding_type == "positional":
      emb = L.positional_embedding(c_noise, noise_ch, endpoint=True)
    else:
      emb = L.fourier_embedding(c_noise, FourierFreqs(noise_ch // 2, name="map_noise")())
    half = noise_ch // 2
    emb = jnp.concatenate([emb[:, half:], emb[:, :half]], axis=1)
    if self.label_dim:
      labels = class_labels
      if train and self.label_dropout:
        keep = jax.random.uniform(self.make_rng("dropout"), (x.shape[0], 1)) >= self.label_dropout
        labels = labels * keep.astype(labels.dtype)
      emb = emb + L.Linear(noise_ch, name="map_label")(labels * math.sqrt(self.label_dim))
    if self.augment_dim and augment_labels is not None:
      emb = emb + L.Linear(noise_ch, use_bias=False, name="map_augment")(augment_labels)
    emb = nn.silu(L.Linear(emb_ch, name="map_layer0")(emb))
    emb = nn.silu(L.Linear(emb_ch, name="map_layer1")(emb))

    # Encoder.
    skips, aux = [], x
    cout = self.in_channels
    for level, mult in enumerate(self.channel_mult):
      res = self.img_resolution >> level
      tag = f"{res}x{res}"
      if level == 0:
        cout = self.model_channels
        x = L.Conv2d(cout, 3, name=f"enc_{tag}_conv")(x)
        skips.append(x)
      else:
        x = block(cout, f"enc_{tag}_down", down=True)(x, emb, train)
        skips.append(x)
        if self.encoder_type == "skip":
          aux = L.Conv2d(aux.shape[-1], 0, down=True, resample_filter=rf,
                         name=f"enc_{tag}_aux_down")(aux)
          x = skips[-1] = x + L.Conv2d(cout, 1, name=f"enc_{tag}_aux_skip")(aux)
        elif self.encoder_type == "residual":
          x = skips[-1] = aux = (x + L.Conv2d(cout, 3, down=True, resample_filter=rf,
                                              fused_resample=True,
                                              name=f"enc_{tag}_aux_residual")(aux)) / math.sqrt(2)
      for i in range(self.num_blocks):
        cout = self.model_channels * mult
        x = block(cout, f"enc_{tag}_block{i}", attention=res in self.attn_resolutions)(
            x, emb, train)
        skips.append(x)

    # Decoder.
    aux = None
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
        attn = i == self.num_blocks and res in self.attn_resolutions
        x = block(cout, f"dec_{tag}_block{i}", attention=attn)(x, emb, train, skips.pop())
      if self.decoder_type == "skip" or level == 0:
        if self.decoder_type == "skip" and level < len(self.channel_mult) - 1:
          aux = L.Conv2d(self.out_channels, 0, up=True, resample_filter=rf,
                         name=f"dec_{tag}_aux_up")(aux)
        tmp = head(self, x, f"dec_{tag}_aux_norm", f"dec_{tag}_aux_conv", 1e-6, L.XAVIER_ZERO)
        aux = tmp if aux is None else tmp + aux
    return aux.astype(jnp.float32)
