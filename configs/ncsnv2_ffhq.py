"""NCSNv2 on FFHQ at 256x256: NCSNv2 paper Table 4.

sigma_1 = 348, L = 2311, T = 3, eps = 0.9e-7, batch 32, 80k iterations; lr 1e-4, EMA 0.999,
final denoising step.
Adam eps is 1e-3 for FFHQ, as in the official config; 256 px selects the deepest
RefineNet (Table 3c).
"""

from configs import default


def get_config():
  c = default.get_default_config()
  c.training.batch_size = 32
  c.training.n_iters = 80000
  c.training.snapshot_freq = 5000

  c.sampling.batch_size = 16
  c.sampling.n_steps_each = 3
  c.sampling.step_lr = 0.9e-7
  c.sampling.denoise = True

  c.data.dataset = "FFHQ"
  c.data.source = "tfds"
  c.data.image_size = 256
  c.data.channels = 3
  c.data.random_flip = True

  c.model.name = "ncsnv2"
  c.model.sigma_begin = 348.0
  c.model.sigma_end = 0.01
  c.model.num_classes = 2311
  c.model.ngf = 128
  c.model.ema = True
  c.model.ema_rate = 0.999

  c.optim.lr = 1e-4
  c.optim.eps = 1e-3
  c.lock()
  return c
