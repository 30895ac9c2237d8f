"""NCSNv2 on FFHQ (256x256): NCSNv2 paper Table 4 (sigma_1, L, T, eps, batch, iterations).

256 px selects the deepest RefineNet (Table 3c). Adam eps is 1e-3 for FFHQ, as in
the official config. eps = 9e-7, not Table 4's "0.9e-7": the official YAML has 9e-7, and
Technique 4 (score_jax.noise.langevin_step_size) gives 8.9e-7 for these levels and T = 3,
so the table's exponent is a typo."""

from configs import default


def get_config():
  c = default.get_ncsnv2_config(
      dataset="FFHQ", image_size=256, sigma_begin=348.0, num_classes=2311,
      n_steps_each=3, step_lr=9e-7, batch_size=32, n_iters=80_000)
  c.optim.eps = 1e-3
  c.lock()
  return c
