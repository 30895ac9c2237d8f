import json
import os
import shutil
import signal
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

import train_worker
from conftest import ROOT, preempted_step, subprocess_env, wait_for_logged_steps
from score_jax import build
from score_jax import checkpoints, generate, train
from score_jax import state as state_lib

WORKER = os.path.join(ROOT, "tests", "train_worker.py")


def read_metrics(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(line) for line in f]


def snapshot(workdir):
  """Every file under workdir with its bytes, to prove nothing was changed."""
  out = {}
  for root, _, files in os.walk(workdir):
    for name in files:
      path = os.path.join(root, name)
      with open(path, "rb") as f:
        out[os.path.relpath(path, workdir)] = f.read()
  return out


def _no_fresh_init(*args):
  raise AssertionError("a run with a checkpoint initialised a fresh state")


def test_train_checkpoint_resume_sample(tmp_path, tiny, monkeypatch):
  wd = str(tmp_path / "run")
  c = tiny(**{"training.n_iters": 4, "training.snapshot_freq": 2, "training.log_freq": 1})
  state = train.train_and_evaluate(build.build(c), wd)
  assert int(state.step) == 4
  assert [m["step"] for m in read_metrics(wd)] == [1, 2, 3, 4]
  assert all(np.isfinite(m["loss"]) for m in read_metrics(wd))
  assert [m["lr"] for m in read_metrics(wd)] == pytest.approx([c.optim.lr] * 4)
  assert sorted(os.listdir(os.path.join(wd, "checkpoints"))) == ["2", "4"]
  assert os.path.exists(os.path.join(wd, "samples", "image_grid_4.png"))

  # Same command with more steps: resumes at 4 and continues the count. Restoring reads into
  # the state's shapes: nothing is initialised (compiling init is the slowest part of a
  # small model's restart), neither here nor in sampling.
  monkeypatch.setattr(train, "fresh_state", _no_fresh_init)
  monkeypatch.setattr(state_lib, "fresh_state", _no_fresh_init)
  c.training.n_iters = 7
  c.training.log_freq = 2
  state = train.train_and_evaluate(build.build(c), wd)
  assert int(state.step) == 7
  assert [m["step"] for m in read_metrics(wd)] == [1, 2, 3, 4, 6, 7]
  # keep_checkpoints=3 keeps the newest three.
  assert sorted(os.listdir(os.path.join(wd, "checkpoints")), key=int) == ["4", "6", "7"]

  samples = generate.sample(build.build(c), wd)
  assert samples.shape == (8, 28, 28, 1)
  saved = np.load(os.path.join(wd, "samples", "sample_7.npz"))["samples"]
  np.testing.assert_array_equal(saved, samples)
  assert os.path.exists(os.path.join(wd, "samples", "sample_7.png"))
  # Sampling uses the EMA weights held in the optimizer state, which differ from the raw ones.
  assert not np.allclose(jax.tree.leaves(state.ema_params)[0], jax.tree.leaves(state.params)[0])

  # Inpainting: rows of occluded input, completions, original; known pixels kept.
  c.sampling.inpainting = True
  c.sampling.inpaint_split = "train"
  c.sampling.n_completions = 2
  comps = generate.sample(build.build(c), wd)
  saved = np.load(os.path.join(wd, "samples", "inpaint_7.npz"))
  assert comps.shape == (4, 2, 28, 28, 1)  # batch 8 / 2 completions = 4 images
  top = comps[:, :, :14] - saved["originals"][:, None, :14]
  assert np.abs(top).max() < 5 * c.model.sigma_end
  assert os.path.exists(os.path.join(wd, "samples", "inpaint_7.png"))

  # Interpolation: rows of N + 1 interpolants.
  c.sampling.inpainting = False
  c.sampling.interpolation = True
  c.sampling.n_interpolations = 3
  out = generate.sample(build.build(c), wd)
  assert out.shape == (2, 4, 28, 28, 1)  # batch 8 / (N + 1) = 2 rows
  assert os.path.exists(os.path.join(wd, "samples", "interpolation_7.png"))
  c.sampling.inpainting = True
  with pytest.raises(ValueError, match="choose one"):
    generate.sample(build.build(c), wd)


def test_resumed_run_equals_uninterrupted_run(tmp_path, tiny):
  """6 steps against 3 + 3 resumed: the data iterator's position comes back with the
  checkpoint, so every batch, every logged loss and the final parameters are identical."""
  base = {"training.snapshot_sampling": False, "training.log_freq": 1,
          "training.snapshot_freq": 3, "data.random_flip": True}
  a, b = str(tmp_path / "a"), str(tmp_path / "b")
  whole = train.train_and_evaluate(build.build(tiny(**base, **{"training.n_iters": 6})), a)
  train.train_and_evaluate(build.build(tiny(**base, **{"training.n_iters": 3})), b)
  resumed = train.train_and_evaluate(build.build(tiny(**base, **{"training.n_iters": 6})), b)
  assert [m["step"] for m in read_metrics(b)] == [1, 2, 3, 4, 5, 6]
  np.testing.assert_array_equal([m["loss"] for m in read_metrics(a)],
                                [m["loss"] for m in read_metrics(b)])
  for x, y in zip(jax.tree.leaves(whole), jax.tree.leaves(resumed)):
    np.testing.assert_array_equal(x, y)


def test_workdir_of_another_model_is_refused_and_left_intact(tmp_path, tiny):
  wd = str(tmp_path / "run")
  train.train_and_evaluate(build.build(tiny(**{"training.n_iters": 2,
                                               "training.snapshot_sampling": False})),
                           wd)
  before = snapshot(wd)
  with pytest.raises(checkpoints.CheckpointMismatchError, match="model.ngf: checkpoint 4"):
    train.train_and_evaluate(build.build(tiny(**{"model.ngf": 8, "training.n_iters": 4})), wd)
  with pytest.raises(checkpoints.CheckpointMismatchError, match="model.ngf"):
    generate.sample(build.build(tiny(**{"model.ngf": 8})), wd)
  assert snapshot(wd) == before


@pytest.mark.parametrize("override,match", [
    ({"model.sigma_begin": 0.001}, "sigma_begin=0.001 must be larger"),
    ({"data.dataset": "IMAGENET"}, "dataset='IMAGENET'"),
    ({"data.source": "web"}, "source='web'"),
    ({"data.image_size": 31}, "image_size=31"),
    ({"data.channels": 3}, "channels=3"),
    ({"training.batch_size": 0}, "batch_size=0"),
    ({"sampling.inpainting": True, "sampling.interpolation": True}, "choose one"),
    ({"sampling.inpainting": True, "sampling.inpaint_mask": "left"}, "inpaint_mask='left'"),
    ({"sampling.init": "zeros"}, "init='zeros'"),
])
def test_bad_config_fails_before_writing(tmp_path, tiny, override, match):
  wd = tmp_path / "run"
  with pytest.raises(ValueError, match=match):
    train.train_and_evaluate(build.build(tiny(**override)), str(wd))
  assert not wd.exists()


def test_sample_without_checkpoint_is_a_clear_error(tmp_path, tiny):
  with pytest.raises(FileNotFoundError, match="no checkpoint"):
    generate.sample(build.build(tiny()), str(tmp_path / "empty"))


def _raise_priority():
  # Gloo waits a fixed 30 s for a peer at each new collective, and JAX offers no setting for
  # it. On 2 cores, a test in the other xdist worker could starve one process of a pair
  # for longer than that (seen once in a full run); as root, the pair is scheduled first.
  if os.geteuid() == 0:
    os.nice(-10)


def run_worker(workdir, devices, extra=(), env_extra=None, priority=False):
  env = subprocess_env(devices, peers="--coordinator" in extra)
  env.update(env_extra or {})
  return subprocess.Popen([sys.executable, WORKER, "--workdir", workdir, *extra], env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          preexec_fn=_raise_priority if priority else None)


def losses_of(proc):
  out, err = proc.communicate(timeout=600)
  assert proc.returncode == 0, err[-3000:]
  line = [l for l in out.splitlines() if l.startswith("LOSSES=")][-1]
  return json.loads(line[len("LOSSES="):])


WORKER_OUTPUTS = (("sample", "sample_3", "samples"), ("inpainting", "inpaint_3", "completions"),
                  ("interpolation", "interpolation_3", "interpolants"))


def worker_samples(workdir):
  """The worker's plain samples, inpaintings and interpolants (those it made), each one
  array."""
  out = {}
  for _, name, key in WORKER_OUTPUTS:
    path = os.path.join(workdir, "samples", name + ".npz")
    if os.path.exists(path):
      out[name] = np.load(path)[key]
  return out


def assert_same_samples(got, want):
  assert got and set(got) <= set(want), (sorted(got), sorted(want))
  for name in got:
    np.testing.assert_allclose(got[name], want[name], atol=2e-4, err_msg=name)


@pytest.fixture
def one_device_run(shared):
  """The worker on one device, every sampling job: the reference of both tests below, made
  once per session."""
  def make(path):
    result = losses_of(run_worker(os.path.join(path, "wd"), 1))
    with open(os.path.join(path, "losses.json"), "w") as f:
      json.dump(result, f)
  path = shared("train_worker_one_device", make)
  with open(os.path.join(path, "losses.json")) as f:
    return json.load(f), worker_samples(os.path.join(path, "wd"))


def test_eight_devices_give_the_losses_and_samples_of_one(tmp_path, one_device_run):
  one, one_samples = one_device_run
  eight = losses_of(run_worker(str(tmp_path / "eight"), 8))
  assert (one["devices"], eight["devices"]) == (1, 8)
  np.testing.assert_allclose(eight["losses"], one["losses"], rtol=2e-5)
  # Each sample's noise depends on its id only, so splitting the batch over 8 devices
  # (padding the one interpolation row to 8) gives the same samples, inpaintings and
  # interpolants (up to float reassociation in the sharded network).
  got = worker_samples(str(tmp_path / "eight"))
  assert sorted(got) == sorted(one_samples) == ["inpaint_3", "interpolation_3", "sample_3"]
  assert_same_samples(got, one_samples)


def test_two_processes_give_the_losses_of_one_and_agree_on_a_preemption_step(tmp_path,
                                                                          one_device_run):
  """Two processes train and sample as one does; and since a pod's hosts get a preemption
  notice at different times, SIGTERM to one of them makes both save the same step (JAX's
  preemption sync manager) and exit 0."""
  one, _ = one_device_run  # made first: a third process competing for the cores could hold
  # one of the pair back past Gloo's fixed 30 s wait at a collective.
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
  wd = str(tmp_path / "multi")
  n_iters = 100_000
  procs = [run_worker(wd, 2, ["--coordinator", f"127.0.0.1:{port}", "--num_processes", "2",
                              "--process_id", str(i), "--n_iters", str(n_iters),
                              "--samples", "sample"], priority=True) for i in range(2)]
  wait_for_logged_steps(wd, 3, procs, timeout=400)
  procs[1].send_signal(signal.SIGTERM)  # process 0 gets no signal
  outs = []
  for i, p in enumerate(procs):
    out, err = p.communicate(timeout=300)
    assert p.returncode == 0, f"process {i}: {err[-3000:]}"
    outs.append(out)
  saved = preempted_step(outs[0])
  assert saved >= 3 and os.listdir(os.path.join(wd, "checkpoints")) == [str(saved)]
  multi = json.loads([l for l in outs[0].splitlines() if l.startswith("LOSSES=")][-1][7:])
  assert multi["devices"] == 4 and len(multi["losses"]) == saved
  # A constant learning rate: the first 3 steps are the one-device reference's.
  np.testing.assert_allclose(multi["losses"][:3], one["losses"], rtol=2e-5)
  # Sampling across the processes gives this process's (one device) samples of that step.
  got = np.load(os.path.join(wd, "samples", f"sample_{saved}.npz"))["samples"]
  mine = str(tmp_path / "mine")
  shutil.copytree(os.path.join(wd, "checkpoints"), os.path.join(mine, "checkpoints"))
  generate.sample(build.build(train_worker.worker_config(n_iters)), mine)
  want = np.load(os.path.join(mine, "samples", f"sample_{saved}.npz"))["samples"]
  np.testing.assert_allclose(got, want, atol=2e-4)


def test_sample_fn_num_levels_runs_the_first_levels_without_denoising(tiny):
  from score_jax import samplers
  c = tiny(**{"sampling.denoise": True, "sampling.init": "uniform"})
  built = build.build(c)
  model = built.network
  params = model.init(jax.random.PRNGKey(0), *built.inputs)["params"]
  key = jax.random.PRNGKey(3)
  init_key, run_key = jax.random.split(key)
  x0 = samplers.uniform_init(init_key, (8, 28, 28, 1))
  score_fn = samplers.indexed_score_fn(model.apply, {"params": params})
  sigmas = built.method.levels
  s = c.sampling
  for levels, denoise in ((2, False), (3, True)):
    want = samplers.annealed_langevin(score_fn, x0, sigmas[:levels], s.n_steps_each,
                                      s.step_lr, run_key, denoise=denoise)
    got = generate.sample_fn_of(built, num_levels=levels)(params, key)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
  with pytest.raises(ValueError, match="num_levels=4"):
    generate.sample_fn_of(built, num_levels=4)
