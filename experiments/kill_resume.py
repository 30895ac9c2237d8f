"""Kills a training run with SIGKILL at random moments, some during checkpoint writes,
restarts it with the same command each time, and checks that it ends with parameters, EMA
and optimizer state bit-identical to an uninterrupted run of the same command.

  python experiments/kill_resume.py --kills=20 --workdir=/tmp/kills
  python experiments/kill_resume.py --config=configs/ncsnv2_mnist.py --kills=5 \
      --set training.n_iters=200 --set training.snapshot_freq=20

The default config is the tests' tiny NCSNv2 (tests/tiny_mnist_config.py), 40 steps with a
checkpoint every 2, so that many kills land inside a save. Prints one line per kill and
exits 1 when the runs differ or a restart fails.
"""

import argparse
import os
import random
import subprocess
import sys
import time
import warnings

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MAIN = os.path.join(ROOT, "main.py")
TINY = os.path.join(ROOT, "tests", "tiny_mnist_config.py")
TINY_SETTINGS = ("training.n_iters=40", "training.snapshot_freq=2", "training.log_freq=1",
                 "training.snapshot_sampling=False", "training.keep_checkpoints=2")


def train_command(config: str, workdir: str, settings) -> list:
  return [sys.executable, MAIN, f"--config={config}", "--mode=train", f"--workdir={workdir}",
          *(f"--config.{s}" for s in settings)]


def run_to_end(cmd, env=None, timeout: float = 1800) -> None:
  out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
  if out.returncode:
    raise RuntimeError(f"{' '.join(cmd)} ended with status {out.returncode}:\n"
                       f"{out.stderr[-3000:]}")


def _saving(checkpoint_dir: str) -> bool:
  """Whether orbax is writing a step now (it writes into a tmp folder, then renames it)."""
  try:
    return any("tmp" in name for name in os.listdir(checkpoint_dir))
  except FileNotFoundError:
    return False


def _trained_steps(workdir: str) -> int:
  try:
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
      return sum(1 for _ in f)
  except FileNotFoundError:
    return 0


def kill_once(cmd, workdir: str, rng: random.Random, during_save: bool, env=None,
              timeout: float = 600) -> str:
  """Start `cmd`, SIGKILL it once it has trained a step (at the next checkpoint write when
  `during_save`, else after a random 0-3 s) and say when; 'finished' when it ended first."""
  proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
  checkpoint_dir = os.path.join(workdir, "checkpoints")
  start, deadline, trained_at, delay = _trained_steps(workdir), time.time() + timeout, None, None
  try:
    while proc.poll() is None:
      if time.time() > deadline:
        raise TimeoutError(f"{' '.join(cmd)} neither trained nor ended in {timeout} s")
      if trained_at is None and _trained_steps(workdir) > start:
        trained_at, delay = time.time(), rng.uniform(0.0, 3.0)
      if trained_at is not None:
        if during_save and _saving(checkpoint_dir):
          proc.kill()
          proc.wait()
          return f"killed during a checkpoint write, {_trained_steps(workdir)} steps logged"
        if not during_save and time.time() - trained_at > delay:
          proc.kill()
          proc.wait()
          return f"killed {delay:.2f} s after a step, {_trained_steps(workdir)} steps logged"
      time.sleep(0.002)
  finally:
    if proc.poll() is None:
      proc.kill()
    err = proc.stderr.read().decode()
    proc.stderr.close()
  if proc.returncode:
    raise RuntimeError(f"a run before the kill failed ({proc.returncode}):\n{err[-3000:]}")
  return "finished before the kill"


def final_state(workdir: str) -> dict:
  """{path: array} of the newest checkpoint's TrainState, read without a config."""
  import jax  # pylint: disable=g-import-not-at-top
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  directory = os.path.join(os.path.abspath(workdir), "checkpoints")
  step = max(int(n) for n in os.listdir(directory) if n.isdigit())
  with warnings.catch_warnings():  # "sharding read from the file": wanted, on one host
    warnings.simplefilter("ignore", UserWarning)
    tree = ocp.PyTreeCheckpointer().restore(os.path.join(directory, str(step), "state"))
  leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
  return {jax.tree_util.keystr(p, simple=True, separator="/"): np.asarray(v) for p, v in leaves}


def differences(a: dict, b: dict) -> list:
  """Paths whose arrays are not bit-identical (or exist on one side only)."""
  out = sorted(set(a) ^ set(b))
  for k in sorted(set(a) & set(b)):
    if a[k].dtype != b[k].dtype or a[k].shape != b[k].shape or a[k].tobytes() != b[k].tobytes():
      out.append(k)
  return out


def kill_and_compare(config: str, workdir: str, kills: int, settings, seed: int = 0,
                     env=None, report=print) -> list:
  """Run uninterrupted into workdir/whole, then `kills` times killed and restarted into
  workdir/killed (every other kill during a checkpoint write), finish it, and return the
  paths of the arrays that differ (empty: bit-identical)."""
  rng = random.Random(seed)
  whole, killed = os.path.join(workdir, "whole"), os.path.join(workdir, "killed")
  run_to_end(train_command(config, whole, settings), env)
  cmd = train_command(config, killed, settings)
  for i in range(kills):
    what = kill_once(cmd, killed, rng, during_save=i % 2 == 0, env=env)
    report(f"kill {i + 1}/{kills}: {what}")
    if what.startswith("finished"):
      break
  run_to_end(cmd, env)
  return differences(final_state(whole), final_state(killed))


def main():
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--config", default=TINY)
  p.add_argument("--workdir", required=True, help="gets whole/ and killed/; must not exist")
  p.add_argument("--kills", type=int, default=20)
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--set", action="append", default=None, metavar="KEY=VALUE",
                 help="a config override (repeatable); default: the tiny run's settings")
  args = p.parse_args()
  if os.path.exists(args.workdir):
    p.error(f"--workdir={args.workdir} exists; expected a new folder")
  settings = args.set if args.set is not None else TINY_SETTINGS
  t0 = time.time()
  diff = kill_and_compare(args.config, args.workdir, args.kills, settings, args.seed)
  if diff:
    print(f"DIFFERENT after {args.kills} kills: {', '.join(diff[:10])}")
    sys.exit(1)
  print(f"bit-identical after {args.kills} kills ({time.time() - t0:.0f} s in all)")


if __name__ == "__main__":
  main()
