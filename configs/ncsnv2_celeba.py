"""NCSNv2 on CelebA (64x64): NCSNv2 paper Table 4 (sigma_1, L, T, eps, batch, iterations)."""

from configs import default


def get_config():
  c = default.get_ncsnv2_config(
      dataset="CELEBA", image_size=64, sigma_begin=90.0, num_classes=500,
      n_steps_each=5, step_lr=3.3e-6, batch_size=128, n_iters=210_000)
  c.lock()
  return c
