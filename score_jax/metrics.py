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

  Appending keeps earlier lines across resumes, so the file tells the whole run.
  """

  def __init__(self, workdir: str, is_main: bool = True):
    self._is_main = is_main
    self._path = os.path.join(workdir, "metrics.jsonl")
    self._tb = None
    if not is_main:
      return
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
