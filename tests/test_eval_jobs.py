"""--mode=eval as a job: killed with SIGKILL during generation and restarted, and run on
2 processes x 4 devices, it gives the numbers of one uninterrupted single-device run."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest

from conftest import ROOT, subprocess_env

CONFIG = os.path.join(ROOT, "tests", "tiny_mnist_config.py")
# MNIST features (no Inception download); 6 shards of 8 samples, slow enough to be killed
# between shards.
EVAL_FLAGS = ["--mode=eval", "--config.eval.features=mnist", "--config.eval.num_samples=48",
              "--config.eval.is_splits=2", "--config.sampling.n_steps_each=12"]


def main_cmd(workdir, *flags):
  return [sys.executable, os.path.join(ROOT, "main.py"), f"--config={CONFIG}",
          f"--workdir={workdir}", *flags]


def finish(cmd, env):
  out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env, timeout=900)
  assert out.returncode == 0, out.stderr[-3000:]
  return out


@pytest.fixture
def trained(tiny_trained):
  """tests/tiny_mnist_config.py trained 4 steps (shared: the tests copy it)."""
  return tiny_trained


@pytest.fixture
def whole(shared, trained):
  """The uninterrupted one-device eval of `trained`: the reference of both tests."""
  def make(path):
    finish(main_cmd(copy_of(trained, os.path.join(path, "wd")), *EVAL_FLAGS), subprocess_env(1))
  return os.path.join(shared("eval_jobs_whole", make), "wd")


def copy_of(trained, dest):
  shutil.copytree(trained, dest)
  return str(dest)


def result_of(workdir):
  with open(os.path.join(workdir, "eval", "4.json")) as f:
    return json.load(f)


def test_eval_killed_during_generation_gives_the_uninterrupted_numbers(trained, whole,
                                                                      tmp_path):
  killed = copy_of(trained, tmp_path / "killed")
  (tag,) = os.listdir(os.path.join(whole, "eval", "4"))  # the same settings: the same tag
  shards = os.path.join(killed, "eval", "4", tag, "seed0")
  proc = subprocess.Popen(main_cmd(killed, *EVAL_FLAGS), cwd=ROOT, env=subprocess_env(1),
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  deadline = time.time() + 600
  while not os.path.exists(os.path.join(shards, "shard_00001.npz")):
    assert proc.poll() is None and time.time() < deadline, "the job ended before the kill"
    time.sleep(0.01)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  done = sorted(f for f in os.listdir(shards) if f.endswith(".npz") and ".tmp" not in f)
  assert 2 <= len(done) < 6 and not os.path.exists(os.path.join(killed, "eval", "4.json"))

  out = finish(main_cmd(killed, *EVAL_FLAGS), subprocess_env(1))
  assert f"{len(done)} of 6 shards done" in out.stdout
  a, b = result_of(whole), result_of(killed)
  for key in ("fid", "is_mean", "is_std", "kid_mean", "weights_sha256", "ref_sha256"):
    assert a[key] == b[key], key
  # Other sampler settings: other shards, nothing resumed from these.
  out = finish(main_cmd(killed, *EVAL_FLAGS, "--config.sampling.n_steps_each=11"), subprocess_env(1))
  assert "shards done" not in out.stdout and len(os.listdir(os.path.join(killed, "eval", "4"))) == 2


def test_eval_on_two_processes_of_four_devices_matches_one_device(trained, whole, tmp_path):
  # `whole`, the one-device reference, is made first: a third process competing for the
  # cores could hold one of the pair back past Gloo's fixed 30 s wait for a peer.
  multi = copy_of(trained, tmp_path / "multi")
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
  procs = [subprocess.Popen(
      main_cmd(multi, *EVAL_FLAGS, f"--coordinator_address=127.0.0.1:{port}",
               "--num_processes=2", f"--process_id={i}"),
      cwd=ROOT, env=subprocess_env(4, peers=True), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
      for i in range(2)]
  for i, p in enumerate(procs):
    _, err = p.communicate(timeout=900)
    assert p.returncode == 0, f"process {i}: {err[-3000:]}"
  a, b = result_of(whole), result_of(multi)
  assert a["weights_sha256"] == b["weights_sha256"] and a["num_samples"] == b["num_samples"]
  # Each sample's noise depends on its id only; split over 8 devices the network's sums
  # reassociate (samples within 2e-4), which can move a few uint8 pixels by one level.
  assert b["fid"] == pytest.approx(a["fid"], rel=1e-3)
  assert b["is_mean"] == pytest.approx(a["is_mean"], rel=1e-3)
