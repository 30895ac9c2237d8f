"""NCSNv2 on CIFAR-10 (32x32): NCSNv2 paper Table 4 (sigma_1, L, T, eps, batch, iterations)."""

from configs import default


def get_config():
  c = default.get_ncsnv2_config(
      dataset="CIFAR10", image_size=32, sigma_begin=50.0, num_classes=232,
      n_steps_each=5, step_lr=6.2e-6, batch_size=128, n_iters=300_000)
  c.lock()
  return c
