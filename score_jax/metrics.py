"""Metrics: metrics.jsonl always, TensorBoard through clu when TensorFlow is installed."""

import importlib.util
import json
import os

from absl import logging


def tensorboard_available() -> bool:
  """clu's summary writer imports tensorflow; tensorboard reads the files."""
  return all(importlib.util.find_spec(m) is not None for m in ("tensorflow", "tensorboard"))


class MetricsWriter:
  """Appends one JSON object per logged step to workdir/metrics.jsonl (host 0 only).

  Appending keeps earlier lines across resumes, so the file tells the whole run; a run
  resumed at `resume_step` first drops the lines of later steps, which a killed run logged
  and the resumed one will log again.
  """

  def __init__(self, workdir: str, is_main: bool = True, resume_step: int = 0):
    self._is_main = is_main
    self._path = os.path.join(workdir, "metrics.jsonl")
    self._tb = None
    if not is_main:
      return
    if os.path.exists(self._path):
      _truncate_after(self._path, resume_step)
    if tensorboard_available():
      from clu import metric_writers  # pylint: disable=g-import-not-at-top
      self._tb = metric_writers.create_default_writer(os.path.join(workdir, "tensorboard"))
    else:
      logging.info("TensorBoard is off: tensorflow and tensorboard are not installed "
                   "(pip install 'score_jax[tensorboard]'); metrics go to %s only.", self._path)
      print(f"TensorBoard is off (tensorflow/tensorboard not installed); "
            f"metrics go to {self._path}.")

  def write(self, step: int, metrics: dict) -> None:
    if not self._is_main:
      return
    record = {"step": int(step), **{k: float(v) for k, v in metrics.items()}}
    with open(self._path, "a") as f:
      f.write(json.dumps(record) + "\n")
    if self._tb is not None:
      self._tb.write_scalars(int(step), {k: float(v) for k, v in metrics.items()})

  def flush(self) -> None:
    if self._tb is not None:
      self._tb.flush()


def _truncate_after(path: str, step: int) -> None:
  """Keep the records of steps <= `step` (and no half-written last line), atomically."""
  with open(path) as f:
    lines = f.readlines()
  keep = []
  for line in lines:
    try:
      record = json.loads(line)
    except json.JSONDecodeError:  # the last line of a run killed mid-write
      continue
    if record.get("step", 0) <= step:
      keep.append(json.dumps(record) + "\n")
  if len(keep) != len(lines):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
      f.writelines(keep)
    os.replace(tmp, path)
