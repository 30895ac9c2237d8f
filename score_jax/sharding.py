"""Data-parallel sharding over every device of every host."""

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding

DATA_AXIS = "data"


def data_mesh() -> Mesh:
  """A 1-D mesh over all devices (all hosts) with the axis 'data'.

  The axis is Auto (jit's shardings and sharding constraints steer XLA's propagation);
  newer jax.make_mesh defaults to Explicit axes, which reject such constraints.
  """
  return jax.make_mesh((jax.device_count(),), (DATA_AXIS,),
                       axis_types=(jax.sharding.AxisType.Auto,))


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
