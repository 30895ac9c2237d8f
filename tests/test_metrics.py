import glob
import json
import os

import numpy as np
import pytest

from score_jax import metrics


def test_without_tensorboard_says_so_once_and_writes_jsonl(tmp_path, monkeypatch, capsys):
  monkeypatch.setattr(metrics, "tensorboard_available", lambda: False)
  writer = metrics.MetricsWriter(str(tmp_path))
  writer.write(1, {"loss": 2.5, "lr": 1e-3})
  writer.write(2, {"loss": np.float32(1.5), "lr": 1e-3})
  writer.flush()
  assert capsys.readouterr().out.count("TensorBoard is off") == 1
  with open(tmp_path / "metrics.jsonl") as f:
    assert [json.loads(line) for line in f] == [{"step": 1, "loss": 2.5, "lr": 1e-3},
                                                {"step": 2, "loss": 1.5, "lr": 1e-3}]
  assert not os.path.exists(tmp_path / "tensorboard")


def test_tensorboard_events_hold_the_scalars(tmp_path):
  # Runs where the tensorboard extra is installed (pip install -e '.[tensorboard]').
  tf = pytest.importorskip("tensorflow")
  pytest.importorskip("tensorboard")
  writer = metrics.MetricsWriter(str(tmp_path))
  writer.write(5, {"loss": 2.5})
  writer.write(10, {"loss": 1.25})
  writer.flush()
  got = {}
  for path in glob.glob(str(tmp_path / "tensorboard" / "events.out.tfevents.*")):
    for event in tf.compat.v1.train.summary_iterator(path):
      for value in event.summary.value:
        got[(event.step, value.tag)] = float(tf.make_ndarray(value.tensor))
  assert got == {(5, "loss"): 2.5, (10, "loss"): 1.25}
