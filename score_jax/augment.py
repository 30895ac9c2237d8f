"""EDM's non-leaky geometric augmentation (Karras et al. 2022, App. F.2; the pipe of Karras
et al. 2020 restricted to what EDM enables), as a jittable function of (images, key).

Each image is, independently: flipped in x (probability 1 when augmentation is on, i.e. a
fair coin), flipped in y, scaled isotropically (log2 s ~ N(0, 0.2^2)), rotated (uniform
angle), scaled anisotropically (log2 ~ N(0, 0.2^2), in a frame rotated by a uniform angle
half the time) and translated (N(0, 0.125^2) of the size), each transform with probability
p. The general transforms are composed into one matrix and applied once: reflect padding,
x2 upsampling with the sym6 wavelet filter, bilinear resampling, sym6 downsampling. The 9
labels (xflip, yflip, scale, cos - 1 and sin of the rotation, the aniso pair, the
translation pair) go to the network, so that sampling with zero labels gives
non-augmented images.

Differences from the official pipe: the reflect padding is a fixed W - 1 (H - 1) on each
side instead of the smallest margin the batch needs (a shape that depends on the data
cannot be jitted); where the official margin suffices the pixels are the same, and where it
was clamped the official samples zeros and this reflects.
"""

import math
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

AUGMENT_DIM = 9
SCALE_STD, ANISO_STD, ANISO_ROTATE_PROB, TRANSLATE_STD = 0.2, 0.2, 0.5, 0.125
# The sym6 wavelet's low-pass filter (12 taps): the resampling filter of the official pipe.
SYM6 = np.asarray([
    0.015404109327027373, 0.0034907120842174702, -0.11799011114819057, -0.048311742585633,
    0.4910559419267466, 0.787641141030194, 0.3379294217276218, -0.07263752278646252,
    -0.021060292512300564, 0.04472490177066578, 0.0017677118642428036, -0.007800708325034148,
], np.float32)


def draw(key, n: int, sample_ids=None) -> dict:
  """Every random number the pipe uses, per image from fold_in(key, id): the same values
  whatever the batch split. Keys name the official draws (flip bits, uniforms u_*, normals
  n_*)."""
  from score_jax.samplers.common import per_sample_keys  # pylint: disable=g-import-not-at-top
  keys = per_sample_keys(key, n, sample_ids)

  def one(k):
    ks = jax.random.split(k, 12)
    return dict(
        xflip=jax.random.bernoulli(ks[0]).astype(jnp.float32),
        u_xflip=jax.random.uniform(ks[1]),
        yflip=jax.random.bernoulli(ks[2]).astype(jnp.float32),
        u_yflip=jax.random.uniform(ks[3]),
        n_scale=jax.random.normal(ks[4]), u_scale=jax.random.uniform(ks[5]),
        u_rotate=jax.random.uniform(ks[6]), u_rotate_p=jax.random.uniform(ks[7]),
        n_aniso=jax.random.normal(ks[8]), u_aniso_r=jax.random.uniform(ks[9]),
        u_aniso=jax.random.uniform(ks[10]), u_aniso_rp=jax.random.uniform(ks[11]),
        n_translate=jax.random.normal(jax.random.fold_in(k, 12), (2,)),
        u_translate=jax.random.uniform(jax.random.fold_in(k, 13)))
  return jax.vmap(one)(keys)


def _mat(rows):
  """rows of [N] arrays or numbers -> [N, 3, 3]."""
  n = next(r.shape[0] for row in rows for r in row if isinstance(r, jnp.ndarray))
  return jnp.stack([jnp.stack([jnp.broadcast_to(jnp.asarray(v, jnp.float32), (n,))
                               for v in row], -1) for row in rows], -2)


def _scale(sx, sy):
  return _mat([[sx, 0, 0], [0, sy, 0], [0, 0, 1]])


def _rotate(t):
  return _mat([[jnp.cos(t), jnp.sin(-t), 0], [jnp.sin(t), jnp.cos(t), 0], [0, 0, 1]])


def _translate(tx, ty):
  return _mat([[1, 0, tx], [0, 1, ty], [0, 0, 1]])


def _sep_conv(x, taps, axis: int, stride: int, pad: int):
  """Depthwise 1-D convolution (cross-correlation, as torch) of NHWC x along H (axis 1) or
  W (axis 2)."""
  c = x.shape[-1]
  k = len(taps)
  shape = (k, 1, 1, c) if axis == 1 else (1, k, 1, c)
  w = jnp.asarray(np.tile(np.asarray(taps, np.float32).reshape(shape[:2] + (1, 1)),
                          (1, 1, 1, c)), x.dtype)
  strides = (stride, 1) if axis == 1 else (1, stride)
  padding = ((pad, pad), (0, 0)) if axis == 1 else ((0, 0), (pad, pad))
  return jax.lax.conv_general_dilated(x, w, strides, padding, feature_group_count=c,
                                      dimension_numbers=("NHWC", "HWIO", "NHWC"))


def _zero_interleave(x, axis: int):
  """x2 along `axis` with zeros between samples (2n - 1 long, as the official stack+cut)."""
  n = x.shape[axis]
  out = jnp.zeros(x.shape[:axis] + (2 * n - 1,) + x.shape[axis + 1:], x.dtype)
  idx = [slice(None)] * x.ndim
  idx[axis] = slice(0, None, 2)
  return out.at[tuple(idx)].set(x)


def _bilinear_zeros(img, xs, ys):
  """img [H, W, C] sampled at pixel coordinates xs, ys [h, w] (bilinear, zero outside)."""
  coords = [ys.reshape(-1), xs.reshape(-1)]
  out = jax.vmap(lambda ch: jax.scipy.ndimage.map_coordinates(ch, coords, order=1,
                                                              mode="constant", cval=0.0),
                 in_axes=-1, out_axes=-1)(img)
  return out.reshape(xs.shape + (img.shape[-1],))


def apply(images, d: dict, p: float):
  """images [N, H, W, C] -> (augmented images, labels [N, 9]) for the draws `d` (see
  `draw`) and probability multiplier p."""
  n, h, w, c = images.shape
  on = lambda u, mult=1.0: u < mult * p
  # Pixel blitting: the flips.
  xf = jnp.where(on(d["u_xflip"], 1e8), d["xflip"], 0.0)
  yf = jnp.where(on(d["u_yflip"]), d["yflip"], 0.0)
  b = lambda v: v[:, None, None, None]
  images = jnp.where(b(xf) == 1, images[:, :, ::-1], images)
  images = jnp.where(b(yf) == 1, images[:, ::-1], images)
  # The general transforms, composed as an inverse matrix.
  g = jnp.broadcast_to(jnp.eye(3, dtype=jnp.float32), (n, 3, 3))
  ws = jnp.where(on(d["u_scale"]), d["n_scale"], 0.0)
  s = jnp.exp2(ws * SCALE_STD)
  g = g @ _scale(1 / s, 1 / s)
  wr = jnp.where(on(d["u_rotate_p"]), (d["u_rotate"] * 2 - 1) * math.pi, 0.0)
  g = g @ _rotate(wr)  # rotate2d_inv(-w) = rotate2d(w)
  wa = jnp.where(on(d["u_aniso"]), d["n_aniso"], 0.0)
  ra = jnp.where(d["u_aniso_rp"] < ANISO_ROTATE_PROB, (d["u_aniso_r"] * 2 - 1) * math.pi, 0.0)
  sa = jnp.exp2(wa * ANISO_STD)
  g = g @ _rotate(-ra) @ _scale(1 / sa, sa) @ _rotate(ra)
  wt = jnp.where(on(d["u_translate"])[:, None], d["n_translate"], 0.0)
  g = g @ _translate(-wt[:, 0] * w * TRANSLATE_STD, -wt[:, 1] * h * TRANSLATE_STD)
  labels = jnp.stack([xf, yf, ws, jnp.cos(wr) - 1, jnp.sin(wr), wa * jnp.cos(ra),
                      wa * jnp.sin(ra), wt[:, 0], wt[:, 1]], axis=1)

  # Pad (reflect), upsample x2 with sym6, resample, downsample with sym6, crop.
  hz_pad = len(SYM6) // 4
  mx, my = w - 1, h - 1
  x = jnp.pad(images, ((0, 0), (my, my), (mx, mx), (0, 0)), mode="reflect")
  up = SYM6[::-1]
  x = _sep_conv(_zero_interleave(x, 2), up, 2, 1, (len(SYM6) + 1) // 2)
  x = _sep_conv(_zero_interleave(x, 1), up, 1, 1, (len(SYM6) + 1) // 2)
  g = _scale(jnp.full((n,), 2.0), 2.0) @ g @ _scale(jnp.full((n,), 0.5), 0.5)
  g = _translate(jnp.full((n,), -0.5), -0.5) @ g @ _translate(jnp.full((n,), 0.5), 0.5)
  out_h, out_w = (h + 2 * hz_pad) * 2, (w + 2 * hz_pad) * 2
  in_h, in_w = x.shape[1], x.shape[2]
  g = (_scale(jnp.full((n,), 2 / in_w), 2 / in_h) @ g
       @ _scale(jnp.full((n,), out_w / 2), out_h / 2))
  # affine_grid (align_corners=False): output pixel centres in [-1, 1], mapped by g, then
  # back to input pixel coordinates.
  gx = (2 * jnp.arange(out_w, dtype=jnp.float32) + 1) / out_w - 1
  gy = (2 * jnp.arange(out_h, dtype=jnp.float32) + 1) / out_h - 1
  gx, gy = jnp.meshgrid(gx, gy)
  src_x = g[:, 0, 0, None, None] * gx + g[:, 0, 1, None, None] * gy + g[:, 0, 2, None, None]
  src_y = g[:, 1, 0, None, None] * gx + g[:, 1, 1, None, None] * gy + g[:, 1, 2, None, None]
  px = ((src_x + 1) * in_w - 1) / 2
  py = ((src_y + 1) * in_h - 1) / 2
  x = jax.vmap(_bilinear_zeros)(x, px, py)
  pad = (len(SYM6) - 1) // 2
  x = _sep_conv(x, SYM6, 2, 2, pad)[:, :, hz_pad:-hz_pad]
  x = _sep_conv(x, SYM6, 1, 2, pad)[:, hz_pad:-hz_pad]
  return x.astype(images.dtype), labels


def augment_pipe(images, key, p: float, sample_ids: Optional[jax.Array] = None):
  """(augmented images [N, H, W, C], labels [N, 9]): `draw` then `apply`."""
  return apply(images, draw(key, images.shape[0], sample_ids), p)
