"""Data-parallel sharding over every device of every host, and the XLA options each
platform's programs are compiled with."""

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding

DATA_AXIS = "data"

# XLA:CPU's own convolution emitter computes a 3x3 convolution's kernel gradient at about a
# third of its forward speed (README, Speed). Handing dots, convolutions and reductions to
# YNNPACK instead made the NCSNv2 CIFAR-10 train step 1.9x faster on a 2-core CPU, with
# convolution outputs within 1.5e-6 (relative) of XLA's own and run-to-run bit-identical.
# The option names a CPU-only field of XLA's DebugOptions: GPU and TPU programs are compiled
# without it, as XLA would. (YNNPACK's separate convolution path was slower than XLA's.)
_CPU_COMPILER_OPTIONS = {
    "xla_cpu_experimental_ynn_fusion_type":
        "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT,LIBRARY_FUSION_TYPE_REDUCE",
}


def data_mesh(devices=None) -> Mesh:
  """A 1-D mesh with the axis 'data' over `devices` (default: all devices of all hosts; or,
  e.g., the chips of a TPU topology to compile ahead of time for).

  The axis is Auto (jit's shardings and sharding constraints steer XLA's propagation);
  newer jax.make_mesh defaults to Explicit axes, which reject such constraints.
  """
  devices = jax.devices() if devices is None else list(devices)
  return jax.make_mesh((len(devices),), (DATA_AXIS,),
                       axis_types=(jax.sharding.AxisType.Auto,), devices=devices)


def platform_compiler_options(platform: str) -> dict | None:
  """XLA options for a program compiled for `platform` ('cpu', 'gpu', 'tpu'): the CPU ones
  above, None elsewhere."""
  return dict(_CPU_COMPILER_OPTIONS) if platform == "cpu" else None


def compiler_options(mesh: Mesh) -> dict | None:
  """XLA options for a program run on mesh (`platform_compiler_options` of its devices).

  Every jit of the training, sampling and evaluation paths passes them, so the platform a
  program compiles for picks them, whatever XLA_FLAGS says."""
  return platform_compiler_options(mesh.devices.flat[0].platform)


def global_batch(local: np.ndarray, batch_sharding: NamedSharding, global_size: int):
  """Assemble each host's slice into one global array sharded on 'data'."""
  shape = (global_size,) + local.shape[1:]
  return jax.make_array_from_process_local_data(batch_sharding, local, shape)


def to_host(x) -> np.ndarray:
  """A (possibly multi-host sharded) array as one NumPy array on every host."""
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    x = multihost_utils.process_allgather(x, tiled=True)
  return np.asarray(x)
