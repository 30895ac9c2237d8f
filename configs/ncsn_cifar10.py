"""NCSN on CIFAR10. NCSNv2 paper Table 4, NCSN row for CIFAR-10 (32x32).

NCSN settings (2019 paper, App. B): sigma 1 to 0.01 over L = 10 levels, T = 100 Langevin
steps per level with eps = 2e-5, Adam lr 1e-3, no EMA, no final denoising step.
"""

from configs import default


def get_config():
  c = default.get_default_config()
  c.training.batch_size = 128
  c.training.n_iters = 300000
  c.training.snapshot_freq = 5000

  c.sampling.batch_size = 100
  c.sampling.n_steps_each = 100
  c.sampling.step_lr = 2e-5
  c.sampling.denoise = False

  c.data.dataset = "CIFAR10"
  c.data.source = "tfds"
  c.data.image_size = 32
  c.data.channels = 3
  c.data.random_flip = True

  c.model.name = "ncsn"
  c.model.sigma_begin = 1.0
  c.model.sigma_end = 0.01
  c.model.num_classes = 10
  c.model.ngf = 128
  c.model.ema = False

  c.optim.lr = 1e-3
  c.lock()
  return c
