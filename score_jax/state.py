"""The TrainState and how a fresh or an abstract one is made from what the builder built."""

from typing import Any

import flax
import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec as P

from score_jax import host, optim


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


def init_params(model, inputs, key):
  """The model's initial parameters (`inputs`: what init traces)."""
  return model.init(key, *inputs)["params"]


def init_state(model, tx, inputs, key) -> TrainState:
  """A fresh TrainState with the model's initial parameters (`inputs`: what init traces)."""
  params = init_params(model, inputs, key)
  return TrainState(step=jnp.zeros([], jnp.int32), params=params, opt_state=tx.init(params))


# init runs once per run, so its compile time is all that counts: with one threefry kernel per
# parameter it took 26 s to compile on a 2-core CPU at LLVM's default optimisation, 12.5 s at
# -O0 (values within 1 ulp of the -O2 program's; the same on every host and device count,
# which all compile it alike). CPU only: other backends compile init as XLA would.
_CPU_INIT_COMPILER_OPTIONS = {"xla_backend_optimization_level": 0}


def _run_once(fn, key, mesh):
  """fn(key) compiled and run once, its outputs replicated on mesh."""
  # Initialised under jit straight into its replicated sharding: no host copy of the weights,
  # and every host of a pod computes the same values from the same key.
  jitted = jax.jit(fn, out_shardings=NamedSharding(mesh, P()))
  on_cpu = mesh.devices.flat[0].platform == "cpu"
  compiled = jitted.lower(key).compile(
      compiler_options=_CPU_INIT_COMPILER_OPTIONS if on_cpu else None)
  out = compiled(key)
  jax.block_until_ready(out)
  # Never run again: the compiler's heap and this executable (1,774 kernels for NCSNv2,
  # ~450 MiB of host memory on CPU) go back before the train step or sampler compiles.
  del compiled
  host.release_freed_memory()
  return out


def fresh_state(built, mesh) -> TrainState:
  """The initial TrainState of a `build.Built`, replicated on mesh."""
  return _run_once(lambda key: init_state(built.network, built.optimizer, built.inputs, key),
                   built.rng_keys["init"], mesh)


def fresh_params(built, mesh):
  """The initial network parameters of a `build.Built` (those of `fresh_state`), replicated
  on mesh, without the optimizer's state (Adam's moments and the EMA: 3 more copies)."""
  return _run_once(lambda key: init_params(built.network, built.inputs, key),
                   built.rng_keys["init"], mesh)


def abstract_state(built, mesh):
  """The TrainState of a `build.Built` as jax.ShapeDtypeStruct leaves, replicated on mesh.

  The target of a restore: orbax reads the arrays straight into these shardings, so a run
  that restores never compiles `init`, the slowest program of a small model to compile (one
  threefry kernel per parameter: about 20 s on a 2-core CPU at any width).
  """
  shapes = jax.eval_shape(
      lambda key: init_state(built.network, built.optimizer, built.inputs, key),
      built.rng_keys["init"])
  replicated = NamedSharding(mesh, P())
  return jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=replicated),
                      shapes)
