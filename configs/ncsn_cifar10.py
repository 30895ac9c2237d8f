"""NCSN on CIFAR-10 (32x32): NCSNv2 paper Table 4, NCSN row."""

from configs import default


def get_config():
  c = default.get_ncsn_config(
      dataset="CIFAR10", source="tfds", image_size=32, channels=3, batch_size=128,
      n_iters=300_000)
  c.lock()
  return c
