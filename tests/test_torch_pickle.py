"""The torch-free .pth reader: both serialisations, the official NCSNv2 checkpoint, and files
that would run code if unpickled naively (they must be refused with nothing run)."""

import io
import os
import pickle
import zipfile

import numpy as np
import pytest

from conftest import FIXTURES
from score_jax.importers import torch_pickle

FID = os.path.join(FIXTURES, "fid")


@pytest.mark.parametrize("name", ["inception_random_small_legacy.pth",
                                  "inception_random_small_zip.pth"])
def test_both_serialisations_give_the_tensors(name):
  sd = torch_pickle.load(os.path.join(FID, name))
  ref = np.load(os.path.join(FID, "inception_random_small.npz"))
  keys = [k for k in ref.files if k != "recipe_seed"]
  assert len(keys) == 94 * 4 + 1
  for k in keys:
    np.testing.assert_array_equal(sd[k], ref[k])
    assert sd[k].dtype == ref[k].dtype and sd[k].flags.owndata
  nbt = sd["Mixed_7c.branch_pool.bn.num_batches_tracked"]
  assert nbt.dtype == np.int64 and nbt.shape == ()
  assert list(sd)[:2] == ["Conv2d_1a_3x3.bn.weight", "Conv2d_1a_3x3.bn.bias"]


def test_official_ncsnv2_checkpoint_equals_torch_load():
  torch = pytest.importorskip("torch")
  path = os.path.join(FIXTURES, "ncsnv2_cifar10_ngf8_seed0.pth")
  ours = torch_pickle.load(path)
  ref = torch.load(path, map_location="cpu", weights_only=True)
  assert ours[3] == ref[3] == 1234
  for i in (0, 4):
    assert list(ours[i]) == list(ref[i])
    for k, v in ref[i].items():
      np.testing.assert_array_equal(ours[i][k], v.numpy())
  # Optimizer state: nested dicts and lists of tensors and numbers.
  assert ours[1]["param_groups"][0]["lr"] == ref[1]["param_groups"][0]["lr"]


class _Evil:
  def __init__(self, marker):
    self.marker = marker

  def __reduce__(self):
    return (open, (self.marker, "w"))


def _zip_pth(payload: bytes) -> bytes:
  buf = io.BytesIO()
  with zipfile.ZipFile(buf, "w") as z:
    z.writestr("archive/data.pkl", payload)
    z.writestr("archive/version", "3\n")
  return buf.getvalue()


@pytest.mark.parametrize("fmt", ["zip", "legacy", "plain"])
def test_a_file_that_would_run_code_is_refused(tmp_path, fmt):
  marker = tmp_path / "pwned"
  payload = pickle.dumps({"model": [_Evil(str(marker))]}, protocol=2)
  path = tmp_path / "evil.pth"
  if fmt == "zip":
    path.write_bytes(_zip_pth(payload))
  elif fmt == "legacy":
    head = b"".join(pickle.dumps(x, protocol=2) for x in (0x1950A86A20F9469CFC6C, 1001, {}))
    path.write_bytes(head + payload)
  else:
    path.write_bytes(pickle.dumps(_Evil(str(marker)), protocol=2))
  with pytest.raises(torch_pickle.UnsafePickleError, match=r"(io|builtins)\.open"):
    torch_pickle.load(str(path))
  assert not marker.exists()


def test_truncated_or_foreign_files_are_value_errors(tmp_path):
  good = open(os.path.join(FID, "inception_random_small_legacy.pth"), "rb").read()
  cut = tmp_path / "cut.pth"
  cut.write_bytes(good[:len(good) // 2])
  with pytest.raises(ValueError, match="cut.pth"):
    torch_pickle.load(str(cut))
  other = tmp_path / "other.pth"
  other.write_bytes(b"not a pickle at all")
  with pytest.raises(ValueError, match="other.pth"):
    torch_pickle.load(str(other))
