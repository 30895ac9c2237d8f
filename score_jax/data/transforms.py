"""Each paper's preprocessing as a named, pure transform of one uint8 HWC image.

| name | what | used by |
| --- | --- | --- |
| `resize` | resize to image_size x image_size | FFHQ, CelebA-HQ (NCSNv2, DDPM), AFHQv2; MNIST/CIFAR-10 at other sizes |
| `center_crop_resize` | centre crop `crop_size` x `crop_size`, then resize | CelebA: crop 140, resize 64 (NCSN, NCSNv2) |
| `resize_short_center_crop` | resize the shorter side to image_size, centre crop | LSUN (NCSNv2, DDPM) |
| `none` | the image must already be image_size x image_size | EDM's dataset_tool zips |

Resizing is PIL's bilinear filter, which widens its support when shrinking (antialiased), as
torchvision's Resize on PIL images in the official NCSN/NCSNv2 code. Then uint8 -> float32
in [0, 1] (`to_unit`), optional dequantisation (`dequantize`: (255 x + u) / 256, u ~ U[0, 1),
as NCSNv2's `uniform_dequantization`), optional horizontal flip (`random_flip`). Methods that
train on [-1, 1] (DDPM) map the [0, 1] batch themselves.
"""

import io
from typing import Optional

import numpy as np

PREPROCESS = ("resize", "center_crop_resize", "resize_short_center_crop", "none")


class BadImageError(ValueError):
  """An image that cannot be decoded or does not fit the preprocessing; names the file."""


def decode(name: str, payload, channels: int) -> np.ndarray:
  """uint8 [H, W, channels] from encoded bytes or an array; BadImageError naming `name`."""
  from PIL import Image, UnidentifiedImageError  # pylint: disable=g-import-not-at-top
  if isinstance(payload, np.ndarray):
    img = payload if payload.ndim == 3 else payload[..., None]
    if img.shape[-1] != channels:
      raise BadImageError(f"{name} has {img.shape[-1]} channel(s); expected "
                          f"config.data.channels={channels}.")
    return np.asarray(img, np.uint8)
  try:
    with Image.open(io.BytesIO(payload)) as im:
      im.load()
      mode = im.mode
      if channels == 3 and mode in ("RGB", "RGBA", "P", "CMYK", "YCbCr"):
        arr = np.asarray(im.convert("RGB"))
      elif channels == 1 and mode in ("L", "LA", "I", "I;16"):
        arr = np.asarray(im.convert("L"))[..., None]
      else:
        raise BadImageError(f"{name} is a {mode!r} image ({len(im.getbands())} channel(s)); "
                            f"expected config.data.channels={channels}.")
  except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
    if isinstance(e, BadImageError):
      raise
    raise BadImageError(f"{name} cannot be read as an image: {e}") from e
  return np.ascontiguousarray(arr, np.uint8)


def _pil_resize(img: np.ndarray, height: int, width: int) -> np.ndarray:
  from PIL import Image  # pylint: disable=g-import-not-at-top
  if img.shape[0] == height and img.shape[1] == width:
    return img
  pil = Image.fromarray(img[..., 0] if img.shape[-1] == 1 else img)
  out = np.asarray(pil.resize((width, height), Image.BILINEAR))
  return out[..., None] if out.ndim == 2 else out


def center_crop(img: np.ndarray, size: int, name: str = "image") -> np.ndarray:
  h, w = img.shape[:2]
  if h < size or w < size:
    raise BadImageError(f"{name} is {h}x{w}, too small for a {size}x{size} centre crop.")
  top, left = (h - size) // 2, (w - size) // 2
  return img[top:top + size, left:left + size]


def preprocess(img: np.ndarray, kind: str, image_size: int, crop_size: int = 0,
               name: str = "image") -> np.ndarray:
  """The named preprocessing of the table above: uint8 HWC -> uint8 [size, size, C]."""
  if kind == "resize":
    return _pil_resize(img, image_size, image_size)
  if kind == "center_crop_resize":
    return _pil_resize(center_crop(img, crop_size, name), image_size, image_size)
  if kind == "resize_short_center_crop":
    h, w = img.shape[:2]
    scale = image_size / min(h, w)
    img = _pil_resize(img, max(image_size, round(h * scale)), max(image_size, round(w * scale)))
    return center_crop(img, image_size, name)
  if kind == "none":
    if img.shape[:2] != (image_size, image_size):
      raise BadImageError(f"{name} is {img.shape[0]}x{img.shape[1]}; config.data.preprocess="
                          f"'none' needs {image_size}x{image_size}.")
    return img
  raise ValueError(f"config.data.preprocess={kind!r}; expected one of {PREPROCESS}.")


def to_unit(img: np.ndarray, rng: Optional[np.random.Generator] = None) -> np.ndarray:
  """uint8 -> float32 in [0, 1]; with `rng`, uniformly dequantised: (255 x + u) / 256."""
  x = img.astype(np.float32)
  if rng is None:
    return x / 255.0
  return (x + rng.random(x.shape, dtype=np.float32)) / 256.0


def random_flip(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
  """Mirror left-right with probability 1/2 (DDPM, EDM, NCSNv2 App. B.2)."""
  return x[:, ::-1] if rng.random() < 0.5 else x
