"""NCSNv2 on LSUN church_outdoor (96x96): NCSNv2 paper Table 4 (sigma_1, L, T, eps, batch, iterations).

church_outdoor is 96x96 here as in the paper (Table 4, App. B.2); the official YAML
trains it at 64x64. 96 px selects the deeper RefineNet (Table 3b)."""

from configs import default


def get_config():
  c = default.get_ncsnv2_config(
      dataset="LSUN_CHURCH", image_size=96, sigma_begin=140.0, num_classes=788,
      n_steps_each=4, step_lr=4.9e-6, batch_size=128, n_iters=200_000)
  c.lock()
  return c
