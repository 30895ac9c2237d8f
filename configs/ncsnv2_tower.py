"""NCSNv2 on LSUN tower (128x128): NCSNv2 paper Table 4 (sigma_1, L, T, eps, batch, iterations)."""

from configs import default


def get_config():
  c = default.get_ncsnv2_config(
      dataset="LSUN_TOWER", image_size=128, sigma_begin=190.0, num_classes=1086,
      n_steps_each=3, step_lr=1.8e-6, batch_size=128, n_iters=150_000)
  c.lock()
  return c
