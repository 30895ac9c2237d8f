"""What a preemptible multi-day run and a hostile user do: kill -9, SIGTERM, divergence,
damaged checkpoints, files that would run code, and bad input, each through main.py where
the user meets it."""

import glob
import os
import random
import shutil
import signal
import subprocess
import sys

import jax
import numpy as np
import pytest

from conftest import FIXTURES, ROOT, preempted_step, subprocess_env, wait_for_logged_steps
from experiments import kill_resume
from score_jax import checkpoints, sharding
from score_jax import build
from score_jax.state import abstract_state, fresh_state

TINY = os.path.join(ROOT, "tests", "tiny_mnist_config.py")
MAIN = os.path.join(ROOT, "main.py")
QUIET = ("--config.training.snapshot_sampling=False",)


def main_run(*args, env=None, timeout=600):
  return subprocess.run([sys.executable, MAIN, *args], capture_output=True, text=True,
                        cwd=ROOT, env=env or subprocess_env(1), timeout=timeout)


def assert_one_line_error(out, match):
  """Failed with one line on stderr naming the problem, no traceback."""
  assert out.returncode != 0, out.stdout[-2000:]
  assert "Traceback" not in out.stderr, out.stderr[-3000:]
  errors = [l for l in out.stderr.splitlines() if l.startswith("error:")]
  assert len(errors) == 1 and match in errors[0], out.stderr[-3000:]


# ---- kill -9 and SIGTERM ----------------------------------------------------------------

def test_killed_twice_ends_bit_identical_to_an_uninterrupted_run(tmp_path):
  settings = ("training.n_iters=6", "training.snapshot_freq=2", "training.log_freq=1",
              "training.snapshot_sampling=False", "training.keep_checkpoints=2")
  lines = []
  # Kill 1 lands in a checkpoint write, kill 2 at a random moment after a step.
  diff = kill_resume.kill_and_compare(TINY, str(tmp_path), 2, settings,
                                      env=subprocess_env(1), report=lines.append)
  assert diff == [], lines
  assert any("during a checkpoint write" in l for l in lines), lines
  # The killed run's log has each step once, and no save left a tmp folder behind.
  steps = [int(l.split('"step": ')[1].split(",")[0])
           for l in open(tmp_path / "killed" / "metrics.jsonl")]
  assert steps == list(range(1, 7))
  assert not [n for n in os.listdir(tmp_path / "killed" / "checkpoints") if "tmp" in n]


def test_sigterm_saves_the_step_reached_and_exits_zero(tmp_path):
  wd = str(tmp_path / "run")
  cmd = [sys.executable, MAIN, f"--config={TINY}", "--mode=train", f"--workdir={wd}",
         "--config.training.n_iters=100000", "--config.training.snapshot_freq=1000",
         "--config.training.log_freq=1", *QUIET]
  proc = subprocess.Popen(cmd, cwd=ROOT, env=subprocess_env(1), stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)
  wait_for_logged_steps(wd, 3, [proc], timeout=300)
  proc.send_signal(signal.SIGTERM)
  out, err = proc.communicate(timeout=60)
  assert proc.returncode == 0, err[-3000:]
  saved = preempted_step(out)
  assert saved >= 3 and os.listdir(os.path.join(wd, "checkpoints")) == [str(saved)]
  # The same command continues from it.
  res = main_run(f"--config={TINY}", "--mode=train", f"--workdir={wd}",
                 f"--config.training.n_iters={saved + 1}", *QUIET)
  assert res.returncode == 0, res.stderr[-3000:]
  assert f"Resuming from step {saved}" in res.stdout


# ---- non-finite values ------------------------------------------------------------------

@pytest.mark.parametrize("log_freq,snapshot_freq", [(50, 3), (5, 3)])
def test_a_diverging_run_stops_and_writes_no_nonfinite_checkpoint(tmp_path, tiny, log_freq,
                                                                   snapshot_freq):
  wd = str(tmp_path / "run")
  out = main_run(f"--config={TINY}", "--mode=train", f"--workdir={wd}", *QUIET,
                 "--config.optim.lr=1e30", "--config.training.n_iters=60",
                 f"--config.training.log_freq={log_freq}",
                 f"--config.training.snapshot_freq={snapshot_freq}")
  assert_one_line_error(out, "training went non-finite at step")
  bad_step = int(out.stderr.split("non-finite at step ")[1].split()[0])
  built = build.build(tiny())
  ckpt = checkpoints.Checkpointer(wd, built.signature, create=False)
  assert all(s < bad_step for s in ckpt.all_steps())
  target = abstract_state(built, sharding.data_mesh())
  for step in ckpt.all_steps():  # every one restores, checksums and finiteness verified
    ckpt.restore(step, target)


def test_save_refuses_nonfinite_state(tmp_path, tiny):
  built = build.build(tiny())
  state = fresh_state(built, sharding.data_mesh())
  bad = state.replace(params=jax.tree.map(lambda x: x * np.nan, state.params))
  ckpt = checkpoints.Checkpointer(str(tmp_path), built.signature)
  with pytest.raises(checkpoints.NonFiniteError, match="NaN or Inf in params/.* at step 5"):
    ckpt.save(5, bad)
  ckpt.wait()
  assert ckpt.all_steps() == []


# ---- damaged checkpoints ----------------------------------------------------------------

@pytest.fixture
def trained(tiny_trained):
  """A tiny run with checkpoints at steps 2 and 4 (shared: the tests copy it)."""
  return tiny_trained


def _largest_file(step_dir):
  files = [p for p in glob.glob(os.path.join(step_dir, "state", "**"), recursive=True)
           if os.path.isfile(p)]
  return max(files, key=os.path.getsize)


def _random_bytes(step_dir):
  path = _largest_file(step_dir)
  with open(path, "r+b") as f:
    f.seek(os.path.getsize(path) // 2)
    f.write(random.Random(0).randbytes(256))


def _truncate(step_dir):
  path = _largest_file(step_dir)
  with open(path, "r+b") as f:
    f.truncate(os.path.getsize(path) // 2)


def _no_manifest(step_dir):
  os.remove(os.path.join(step_dir, "state", "manifest.ocdbt"))


def _garbled_metadata(step_dir):
  with open(os.path.join(step_dir, "state", "_METADATA"), "r+b") as f:
    f.seek(10)
    f.write(b"garbage!!")


@pytest.mark.parametrize("damage", [_random_bytes, _truncate, _no_manifest, _garbled_metadata])
def test_a_damaged_newest_checkpoint_falls_back_to_the_previous(trained, tmp_path, tiny,
                                                                 damage, capfd):
  wd = str(tmp_path / "run")
  shutil.copytree(trained, wd)
  damage(os.path.join(wd, "checkpoints", "4"))
  built = build.build(tiny())
  target = abstract_state(built, sharding.data_mesh())
  ckpt = checkpoints.Checkpointer(wd, built.signature)
  with pytest.raises(checkpoints.CorruptCheckpointError, match="checkpoints/4"):
    ckpt.restore(4, target)
  state = ckpt.restore_latest(target, quarantine=True)
  assert int(state.step) == 2
  assert "trying the previous checkpoint" in capfd.readouterr().err
  # Moved aside, not deleted: training will write step 4 again.
  assert ckpt.all_steps() == [2] and os.listdir(os.path.join(wd, "checkpoints_corrupt"))


def test_random_bytes_in_the_newest_checkpoint_are_not_sampled_from(trained, tmp_path):
  wd = str(tmp_path / "run")
  shutil.copytree(trained, wd)
  _random_bytes(os.path.join(wd, "checkpoints", "4"))
  out = main_run(f"--config={TINY}", "--mode=sample", f"--workdir={wd}")
  assert out.returncode == 0, out.stderr[-3000:]
  # Where the bytes land decides which check sees them: the checksums, or the reader.
  assert "checkpoints/4" in out.stderr and "trying the previous checkpoint" in out.stderr
  samples = glob.glob(os.path.join(wd, "samples", "*.npz"))
  assert [os.path.basename(p) for p in samples] == ["sample_2.npz"]
  assert np.isfinite(np.load(samples[0])["samples"]).all()
  # Both damaged: one line, nothing sampled.
  _random_bytes(os.path.join(wd, "checkpoints", "2"))
  shutil.rmtree(os.path.join(wd, "samples"))
  assert_one_line_error(main_run(f"--config={TINY}", "--mode=sample", f"--workdir={wd}"),
                        "no intact checkpoint")
  assert not os.path.exists(os.path.join(wd, "samples"))


# ---- files from strangers ---------------------------------------------------------------

def test_official_pth_converts_with_torch_unimportable(tmp_path):
  blocker = tmp_path / "blocker" / "torch"
  blocker.mkdir(parents=True)
  (blocker / "__init__.py").write_text("raise ImportError('torch is blocked in this test')\n")
  env = subprocess_env(1)
  env["PYTHONPATH"] = os.pathsep.join([str(tmp_path / "blocker"), env.get("PYTHONPATH", "")])
  wd = str(tmp_path / "wd")
  out = main_run("--config=configs/ncsnv2_mnist.py", "--mode=convert", f"--workdir={wd}",
                 "--config.convert.path=" + os.path.join(FIXTURES, "ncsnv2_cifar10_ngf8_seed0.pth"),
                 "--config.data.image_size=32", "--config.data.channels=3",
                 "--config.model.ngf=8", "--config.model.num_classes=232",
                 "--config.model.sigma_begin=50.0", "--config.model.sigma_end=0.01", env=env)
  assert out.returncode == 0, out.stderr[-3000:]
  assert "Wrote step 1234" in out.stdout


# ---- bad input: one line, nothing written -----------------------------------------------

@pytest.mark.parametrize("args,match", [
    (("--config=configs/no_such_config.py", "--mode=train"), "--config cannot be loaded"),
    ((f"--config={TINY}", "--mode=train", "--config.training.bach_size=8"), "bach_size"),
    ((f"--config={TINY}", "--mode=train", "--config.training.batch_size=0"), "batch_size=0"),
    ((f"--config={TINY}", "--mode=sample"), "no checkpoint"),
    ((f"--config={TINY}", "--mode=eval", "--config.eval.features=mnist"), "no checkpoint"),
    # The default Inception weights file is looked for at build time, before anything else.
    ((f"--config={TINY}", "--mode=eval"), "inception_weights="),
    ((f"--config={TINY}", "--mode=train", "--config.data.path=/no/such/folder"),
     "does not exist"),
    ((f"--config={TINY}", "--mode=train", "--config.model.sigma_end=100.0"), "sigma"),
])
def test_bad_input_is_one_line_and_leaves_the_workdir_empty(tmp_path, args, match):
  wd = tmp_path / "wd"
  assert_one_line_error(main_run(*args, f"--workdir={wd}"), match)
  assert not wd.exists()


def test_an_unwritable_or_full_workdir_is_refused_before_work(tmp_path, monkeypatch):
  from score_jax import workdirs  # pylint: disable=g-import-not-at-top
  parent = tmp_path / "ro"
  parent.mkdir()
  mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(parent)],
                           capture_output=True).returncode == 0
  try:
    if not mounted:
      if os.geteuid() == 0:
        pytest.skip("root without mount: no way to make a read-only folder here")
      parent.chmod(0o555)
    with pytest.raises(ValueError, match="is not writable"):
      workdirs.check_writable(str(parent / "wd"))
  finally:
    if mounted:
      subprocess.run(["umount", str(parent)], check=True)
    parent.chmod(0o755)
  usage = shutil.disk_usage(tmp_path)
  monkeypatch.setattr(workdirs.shutil, "disk_usage", lambda _: usage._replace(free=1 << 20))
  with pytest.raises(ValueError, match="1048576 bytes free"):
    workdirs.check_writable(str(tmp_path / "wd"))
  assert not (tmp_path / "wd").exists()


def test_plain_sampling_pads_a_batch_that_does_not_divide_by_the_devices(trained, tmp_path):
  wd = str(tmp_path / "run")
  shutil.copytree(trained, wd)
  out = main_run(f"--config={TINY}", "--mode=sample", f"--workdir={wd}",
                 "--config.sampling.batch_size=5", env=subprocess_env(4))
  assert out.returncode == 0, out.stderr[-3000:]
  assert np.load(os.path.join(wd, "samples", "sample_4.npz"))["samples"].shape == (5, 28, 28, 1)
