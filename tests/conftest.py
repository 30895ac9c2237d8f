import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(ROOT, "tests", "fixtures")
if ROOT not in sys.path:
  sys.path.insert(0, ROOT)

# Many tests compile the same tiny train step and sampler, in this process, in xdist workers
# and in subprocesses (which inherit the variable): a shared compilation cache for the
# session compiles each once.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR",
                      os.path.join(ROOT, ".pytest_cache", "jax_compilation_cache"))


def subprocess_env(devices, peers=False):
  """Environment for a JAX subprocess on `devices` CPU devices.

  peers=True for one process of several: the compilation cache is left out. JAX writes it
  from process 0 only and keys it by device, so process 0 would load what its peers compile
  and run ahead of them; Gloo waits a fixed 30 s for a peer at a collective, then aborts.
  """
  env = dict(os.environ, JAX_PLATFORMS="cpu",
             XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
  if peers:
    env.pop("JAX_COMPILATION_CACHE_DIR", None)
  return env


def tiny_config(**overrides):
  """ncsnv2_mnist shrunk so a train step compiles and runs in seconds on one CPU core."""
  from configs import ncsnv2_mnist
  c = ncsnv2_mnist.get_config()
  c.model.ngf = 4
  c.model.num_classes = 3
  c.model.sigma_begin = 1.0
  c.training.batch_size = 8
  c.training.n_iters = 4
  c.training.snapshot_freq = 2
  c.training.log_freq = 1
  c.sampling.batch_size = 8
  c.sampling.n_steps_each = 2
  c.optim.schedule = "constant"  # the MNIST cosine's warm-up is longer than these runs
  c.optim.warmup = 0
  c.eval.after_training = ""  # the tests that want the closing eval ask for it
  c.eval.num_samples = 16
  c.eval.kid_subset_size = 16
  for key, value in overrides.items():
    section, name = key.split(".")
    c[section][name] = value
  return c


@pytest.fixture
def tiny():
  return tiny_config


def run_main(*args, expect_rc=0, timeout=900):
  """main.py in a subprocess from the repository root; asserts its exit status."""
  import subprocess  # pylint: disable=g-import-not-at-top
  out = subprocess.run([sys.executable, os.path.join(ROOT, "main.py"), *args],
                       capture_output=True, text=True, cwd=ROOT, timeout=timeout)
  assert out.returncode == expect_rc, out.stderr[-3000:]
  return out
