"""NCSNv2 on CELEBA at 64x64: NCSNv2 paper Table 4.

sigma_1 = 90, L = 500, T = 5, eps = 3.3e-6, batch 128, 210k iterations; lr 1e-4, EMA 0.999,
final denoising step."""

from configs import default


def get_config():
  c = default.get_default_config()
  c.training.batch_size = 128
  c.training.n_iters = 210000
  c.training.snapshot_freq = 5000

  c.sampling.batch_size = 100
  c.sampling.n_steps_each = 5
  c.sampling.step_lr = 3.3e-6
  c.sampling.denoise = True

  c.data.dataset = "CELEBA"
  c.data.source = "tfds"
  c.data.image_size = 64
  c.data.channels = 3
  c.data.random_flip = True

  c.model.name = "ncsnv2"
  c.model.sigma_begin = 90.0
  c.model.sigma_end = 0.01
  c.model.num_classes = 500
  c.model.ngf = 128
  c.model.ema = True
  c.model.ema_rate = 0.999

  c.optim.lr = 1e-4
  c.optim.eps = 1e-8
  c.lock()
  return c
