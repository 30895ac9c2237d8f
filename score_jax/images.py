"""Sample grids as PNG."""

import math
import os

import numpy as np
from PIL import Image


def to_uint8(images) -> np.ndarray:
  """[0, 1] floats -> uint8 as an image file stores them: clipped, x * 255 rounded to the
  nearest level (what PIL / diffusers' numpy_to_pil and EDM's generate.py do)."""
  return (np.clip(np.asarray(images, np.float32), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def make_grid(images: np.ndarray, ncol: int = 0, padding: int = 2) -> np.ndarray:
  """[N, H, W, C] in [0, 1] -> uint8 [rows*(H+p)+p, ncol*(W+p)+p, C] with a black border."""
  images = np.asarray(images, np.float32)
  if images.ndim != 4:
    raise ValueError(f"expected images of shape [N, H, W, C]; got {images.shape}.")
  n, h, w, c = images.shape
  ncol = ncol or int(math.ceil(math.sqrt(n)))
  nrow = int(math.ceil(n / ncol))
  grid = np.zeros((nrow * (h + padding) + padding, ncol * (w + padding) + padding, c), np.uint8)
  pixels = to_uint8(images)
  for k in range(n):
    r, q = divmod(k, ncol)
    top, left = padding + r * (h + padding), padding + q * (w + padding)
    grid[top:top + h, left:left + w] = pixels[k]
  return grid


def save_grid(images: np.ndarray, path: str, ncol: int = 0) -> None:
  """Write a PNG grid; written to a temporary name first so a crash leaves no half file."""
  grid = make_grid(images, ncol)
  if grid.shape[-1] == 1:
    grid = grid[..., 0]
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  tmp = path + ".tmp"
  Image.fromarray(grid).save(tmp, format="PNG")
  os.replace(tmp, path)
