"""NCSN on CelebA at 64x64: NCSNv2 paper Table 4, NCSN row (the 2019 paper used 32x32;
Table 4 of the 2020 paper, which compares the two models, is followed)."""

from configs import default


def get_config():
  c = default.get_ncsn_config(
      dataset="CELEBA", source="tfds", image_size=64, channels=3, batch_size=128,
      n_iters=210_000)
  c.lock()
  return c
