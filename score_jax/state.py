"""The TrainState, how a fresh one is built from a config, and the checks that come first."""

from typing import Any

import flax
import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec as P

from score_jax import methods, models, noise, optim, samplers

SAMPLERS = ("langevin", "ancestral", "edm", "ablation")
INPAINT_MASKS = ("bottom_half", "right_half")


def occlusion_mask(kind: str, size: int, channels: int):
  """[H, W, C] float32 with 1 where pixels are known ('bottom_half' / 'right_half' hidden)."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  mask = np.ones((size, size, channels), np.float32)
  if kind == "bottom_half":
    mask[size // 2:] = 0.0
  elif kind == "right_half":
    mask[:, size // 2:] = 0.0
  else:
    raise ValueError(f"config.sampling.inpaint_mask={kind!r}; expected one of {INPAINT_MASKS}.")
  return mask


@flax.struct.dataclass
class TrainState:
  """Everything a step changes. The model and optimizer live in closures, not here.

  Attributes:
    step: int32 [], steps taken.
    params: the network parameters.
    opt_state: the optax state; with `model.ema` it holds the parameter EMA (`optim.ema_of`).
  """
  step: jax.Array
  params: Any
  opt_state: Any

  @property
  def ema_params(self):
    """The EMA parameters when the optimizer keeps them, else the raw parameters."""
    ema = optim.ema_of(self.opt_state)
    return self.params if ema is None else ema


def validate_config(config) -> None:
  """Fail early, before anything is written, on settings the run cannot use."""
  noise.sigmas_from_config(config)  # raises on sigma_begin <= sigma_end and the like
  model = models.get_model(config)  # raises on unknown model names and image sizes
  n_dev = jax.device_count()
  t = config.training
  if t.batch_size <= 0 or t.batch_size % n_dev:
    raise ValueError(f"config.training.batch_size={t.batch_size!r} must be a positive "
                     f"multiple of the {n_dev} device(s) the batch is split over.")
  # Sampling pads its batch to a multiple of the device count (generate.padded_batch).
  if config.sampling.batch_size <= 0:
    raise ValueError(f"config.sampling.batch_size={config.sampling.batch_size!r} must be "
                     "positive.")
  for section, name in (("training", "n_iters"), ("training", "snapshot_freq"),
                        ("training", "log_freq"), ("training", "keep_checkpoints"),
                        ("sampling", "n_steps_each"), ("sampling", "step_lr")):
    if config[section][name] <= 0:
      raise ValueError(f"config.{section}.{name}={config[section][name]!r} must be positive.")
  optim.learning_rate(config)  # raises on an unknown schedule or warm-up out of range
  s = config.sampling
  label_dim = config.model.get("label_dim", 0) if config.model.name == "edm" else 0
  if s.class_label >= label_dim or (s.class_label >= 0 and not label_dim):
    raise ValueError(f"config.sampling.class_label={s.class_label}: the network is "
                     + (f"conditional on {label_dim} classes (0 to {label_dim - 1}, or -1 for "
                        "random ones)." if label_dim else "unconditional; class labels need "
                        "a class-conditional network (model.label_dim > 0)."))
  if s.method == "ablation":
    for key, allowed in (("solver", ("euler", "heun")), ("discretization", ("vp", "ve", "iddpm",
                                                                             "edm")),
                         ("schedule", ("vp", "ve", "linear")), ("scaling", ("vp", "none"))):
      if s[key] not in allowed:
        raise ValueError(f"config.sampling.{key}={s[key]!r}; expected one of {allowed}.")
  if s.init not in samplers.INITS:
    raise ValueError(f"config.sampling.init={s.init!r}; expected one of {samplers.INITS}.")
  if s.inpainting and s.interpolation:
    raise ValueError("config.sampling.inpainting and .interpolation are both set; choose one.")
  if s.inpainting:
    occlusion_mask(s.inpaint_mask, config.data.image_size, config.data.channels)
    if s.batch_size < s.n_completions:
      raise ValueError(f"config.sampling.batch_size={s.batch_size} is smaller than "
                       f"n_completions={s.n_completions}.")
  if (s.inpainting or s.interpolation) and config.model.name not in ("ncsn", "ncsnv2"):
    raise ValueError(f"config.sampling.inpainting / interpolation run annealed Langevin on the "
                     f"levels of an NCSN/NCSNv2 network; config.model.name={config.model.name!r}.")
  methods.get_method(config, model)  # raises on a bad diffusion schedule
  if s.method not in ("",) + SAMPLERS:
    raise ValueError(f"config.sampling.method={s.method!r}; expected one of {SAMPLERS} "
                     "(or '' for the method's own).")
  if s.variance not in samplers.VARIANCES:
    raise ValueError(f"config.sampling.variance={s.variance!r}; expected one of "
                     f"{samplers.VARIANCES}.")
  if s.num_steps < 1 or (s.method == "langevin" and config.model.name == "ddpm" and s.num_steps < 2):
    raise ValueError(f"config.sampling.num_steps={s.num_steps!r} must be at least 1 (2 for "
                     "Langevin levels).")
  if s.sigma_min < 0 or s.sigma_max < 0 or (s.sigma_max and s.sigma_min >= s.sigma_max):
    raise ValueError(f"config.sampling.sigma_min={s.sigma_min!r}, sigma_max={s.sigma_max!r}: "
                     "expected 0 <= sigma_min < sigma_max (0 for the defaults).")
  for t in s.progressive_ts:
    if config.model.name == "ddpm" and not 0 <= t < config.diffusion.num_timesteps:
      raise ValueError(f"config.sampling.progressive_ts has t={t}; expected 0 <= t < "
                       f"diffusion.num_timesteps={config.diffusion.num_timesteps}.")


def init_state(config, model, tx, key) -> TrainState:
  """A fresh TrainState with the model's initial parameters."""
  params = model.init(key, *models.example_inputs(config))["params"]
  return TrainState(step=jnp.zeros([], jnp.int32), params=params, opt_state=tx.init(params))


def rng_keys(config) -> dict:
  """The run's three base keys, split from `seed`: 'init', 'train' and 'sample'."""
  base = jax.random.PRNGKey(config.seed)
  return dict(zip(("init", "train", "sample"), jax.random.split(base, 3)))


def build(config, mesh):
  """(model, tx, replicated fresh state) for a config on a mesh."""
  model = models.get_model(config)
  tx = optim.make_optimizer(config)
  return model, tx, fresh_state(config, model, tx, mesh)


# init runs once per run, so its compile time is all that counts: with one threefry kernel per
# parameter it took 26 s to compile on a 2-core CPU at LLVM's default optimisation, 12.5 s at
# -O0 (values within 1 ulp of the -O2 program's; the same on every host and device count,
# which all compile it alike). CPU only: other backends compile init as XLA would.
_CPU_INIT_COMPILER_OPTIONS = {"xla_backend_optimization_level": 0}


def fresh_state(config, model, tx, mesh) -> TrainState:
  """The initial TrainState, replicated on mesh."""
  # Initialised under jit straight into its replicated sharding: no host copy of the weights,
  # and every host of a pod computes the same values from the same key.
  init = jax.jit(lambda key: init_state(config, model, tx, key),
                 out_shardings=NamedSharding(mesh, P()))
  key = rng_keys(config)["init"]
  on_cpu = mesh.devices.flat[0].platform == "cpu"
  compiled = init.lower(key).compile(
      compiler_options=_CPU_INIT_COMPILER_OPTIONS if on_cpu else None)
  return compiled(key)


def abstract_state(config, mesh):
  """(model, tx, the TrainState as jax.ShapeDtypeStruct leaves, replicated on mesh).

  The target of a restore: orbax reads the arrays straight into these shardings, so a run
  that restores never compiles `init`, the slowest program of a small model to compile (one
  threefry kernel per parameter: about 20 s on a 2-core CPU at any width).
  """
  model = models.get_model(config)
  tx = optim.make_optimizer(config)
  shapes = jax.eval_shape(lambda key: init_state(config, model, tx, key),
                          rng_keys(config)["init"])
  replicated = NamedSharding(mesh, P())
  return model, tx, jax.tree.map(
      lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=replicated), shapes)
