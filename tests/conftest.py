import fcntl
import os
import shutil
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


def wait_for_logged_steps(workdir, n, procs, timeout):
  """Block until `workdir`'s metrics.jsonl has n lines (the step to send SIGTERM after);
  fails with the stderr of any process in `procs` that ended first, or at the timeout."""
  import time  # pylint: disable=g-import-not-at-top
  metrics = os.path.join(workdir, "metrics.jsonl")
  deadline = time.time() + timeout
  while not (os.path.exists(metrics) and len(open(metrics).readlines()) >= n):
    assert all(p.poll() is None for p in procs) and time.time() < deadline, \
        [p.stderr.read()[-3000:] for p in procs if p.poll() is not None]
    time.sleep(0.05)


def preempted_step(stdout):
  """The step a run saved on SIGTERM, from its 'Preempted (SIGTERM): saved step N' line."""
  return int(stdout.split("saved step ")[1].split()[0])


def compiled(fn):
  """jax.jit(fn) with the compiler options of the library's own programs (on CPU: dots,
  convolutions and reductions in YNNPACK), so that a comparison with an official output checks
  the program training and sampling run."""
  import jax  # pylint: disable=g-import-not-at-top
  from score_jax import sharding  # pylint: disable=g-import-not-at-top
  return jax.jit(fn, compiler_options=sharding.compiler_options(sharding.data_mesh()))


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
  c.eval.after_training = False  # the tests that want the closing eval ask for it
  c.eval.num_samples = 16
  c.eval.kid_subset_size = 16
  for key, value in overrides.items():
    section, name = key.split(".")
    c[section][name] = value
  return c


# The files whose tests take longest (compiles, subprocesses, notebooks), longest first, from
# a fresh-clone run's --durations. They are handed out first and the quick files fill in
# after them, so that the two xdist workers finish together instead of one running the
# collection's last slow tests alone (it was up to 3 minutes of one idle core).
_SLOW_FIRST = ("test_evaluate.py", "test_configs.py", "test_reliability.py", "test_train.py",
               "test_spine.py", "test_edm_train.py", "test_notebooks.py", "test_eval_jobs.py",
               "test_data.py", "test_benchmark.py")


def pytest_collection_modifyitems(items):
  rank = {name: i for i, name in enumerate(_SLOW_FIRST)}
  items.sort(key=lambda item: rank.get(os.path.basename(str(item.fspath)), len(rank)))


@pytest.fixture(scope="session")
def shared(tmp_path_factory, worker_id):
  """shared(name, make) -> path of a folder that `make(path)` fills once per test session.

  Whichever xdist worker asks first makes it (under a file lock); the others wait and get the
  same folder. For expensive inputs that several tests read but none changes (copy it to
  change it). A failed `make` leaves no folder: the next caller tries again.
  """
  # xdist's workers share the parent of their base temp folders.
  root = tmp_path_factory.getbasetemp()
  if worker_id != "master":
    root = root.parent

  def get(name, make):
    path = root / name
    with open(root / (name + ".lock"), "w") as lock:
      fcntl.flock(lock, fcntl.LOCK_EX)
      if not (path / ".complete").exists():
        shutil.rmtree(path, ignore_errors=True)
        path.mkdir()
        try:
          make(str(path))
        except BaseException:
          shutil.rmtree(path, ignore_errors=True)
          raise
        (path / ".complete").touch()
    return str(path)

  return get


@pytest.fixture
def tiny_trained(shared):
  """The workdir of a tiny run (tiny_config, no snapshot sampling) with checkpoints at
  steps 2 and 4, made once per session: copy it to change it."""
  def make(path):
    from score_jax import build, train  # pylint: disable=g-import-not-at-top
    train.train_and_evaluate(build.build(tiny_config(**{"training.snapshot_sampling": False})),
                             os.path.join(path, "wd"))
  return os.path.join(shared("tiny_trained", make), "wd")


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
