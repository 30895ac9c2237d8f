"""FID Inception (Flax) against pytorch-fid, and FID / IS / KID against the reference
implementations (tests/fixtures/fid, README in the shared fixtures)."""

import os
import sys

import numpy as np
import pytest

from conftest import FIXTURES
from score_jax.eval import inception, metrics

FID = os.path.join(FIXTURES, "fid")


def recipe_state_dict():
  sys.path.insert(0, FID)
  try:
    from inception_random_weights import inception_random_state_dict  # pylint: disable=g-import-not-at-top
  finally:
    sys.path.remove(FID)
  return inception_random_state_dict(os.path.join(FID, "inception_random_small.npz"))


def test_flax_inception_reproduces_pytorch_fid(tmp_path):
  """Through the public loader: a .pth in the real file's layout (legacy serialisation, as
  torch 1.1 wrote it), read without torch."""
  torch = pytest.importorskip("torch")
  import collections  # pylint: disable=g-import-not-at-top
  sd = recipe_state_dict()
  path = str(tmp_path / "pt_inception.pth")
  torch.save(collections.OrderedDict((k, torch.from_numpy(v)) for k, v in sd.items()), path,
             _use_new_zipfile_serialization=False)
  features = inception.load_pytorch_fid(path)
  d = np.load(os.path.join(FID, "fid_inception_ref.npz"))
  for g in d["groups"]:
    pool3, logits = features(d[f"images_{g}"])
    assert pool3.shape == d[f"pool3_{g}"].shape and logits.shape == d[f"logits_{g}"].shape
    ref = d[f"pool3_{g}"]
    assert np.max(np.abs(pool3 - ref)) / np.max(np.abs(ref)) < 3e-4, g
    ref = d[f"logits_{g}"]
    assert np.max(np.abs(logits - ref)) / np.max(np.abs(ref)) < 3e-4, g


def test_weights_of_another_layout_and_missing_files_are_clear_errors(tmp_path):
  sd = recipe_state_dict()
  bad = dict(sd)
  bad["Mixed_5b.branch1x1.conv.weight"] = bad["Mixed_5b.branch1x1.conv.weight"][:, :10]
  with pytest.raises(inception.InceptionWeightsError, match="Mixed_5b.branch1x1.conv.weight"):
    inception.params_from_state_dict(bad)
  with pytest.raises(inception.InceptionWeightsError, match="lack 1 tensor"):
    inception.params_from_state_dict({k: v for k, v in sd.items() if k != "fc.bias"})
  with pytest.raises(inception.InceptionWeightsError, match="AuxLogits"):
    inception.params_from_state_dict(dict(sd, **{"AuxLogits.fc.weight": np.zeros(3)}))
  with pytest.raises(FileNotFoundError, match="pt_inception-2015-12-05-6726825d.pth"):
    inception.load_pytorch_fid(str(tmp_path / "nowhere.pth"))


def test_frechet_distance_matches_pytorch_fid():
  d = np.load(os.path.join(FID, "fid_frechet.npz"))
  fid = metrics.frechet_distance(d["small_mu1"], d["small_sigma1"], d["small_mu2"],
                                 d["small_sigma2"])
  assert fid == pytest.approx(float(d["small_fid"]), rel=1e-9)
  # 2048-d statistics of fewer samples than dimensions: both covariances singular.
  mu1, s1 = np.mean(d["feat_features1"], axis=0), np.cov(d["feat_features1"], rowvar=False)
  mu2, s2 = np.mean(d["feat_features2"], axis=0), np.cov(d["feat_features2"], rowvar=False)
  fid = metrics.frechet_distance(mu1, s1, mu2, s2)
  assert fid == pytest.approx(float(d["feat_fid_exact"]), rel=1e-6)
  assert fid == pytest.approx(float(d["feat_fid"]), rel=1e-6)
  # Full-rank 2048-d: diagonal plus rank 16.
  lr = [(d[f"lr_mu{j}"].astype(np.float64),
         np.diag(d[f"lr_d{j}"].astype(np.float64))
         + d[f"lr_U{j}"].astype(np.float64) @ d[f"lr_U{j}"].astype(np.float64).T)
        for j in (1, 2)]
  assert metrics.frechet_distance(*lr[0], *lr[1]) == pytest.approx(float(d["lr_fid"]), rel=1e-9)
  # pytorch-fid's own steps, on the small case (the 2048-d sqrtm takes 20 s).
  assert metrics.frechet_distance(d["small_mu1"], d["small_sigma1"], d["small_mu2"],
                                  d["small_sigma2"], method="pytorch_fid") == pytest.approx(
                                      float(d["small_fid"]), rel=1e-12)
  not_psd = np.diag(np.r_[np.ones(63), -1.0])
  with pytest.raises(ValueError, match="sigma1 is not a covariance matrix.*its eigenvalue -1"):
    metrics.frechet_distance(d["small_mu1"], not_psd, d["small_mu2"], d["small_sigma2"])
  with pytest.raises(ValueError, match="sigma2 is not a covariance matrix"):
    metrics.frechet_distance(d["small_mu1"], d["small_sigma1"], d["small_mu2"], not_psd)
  with pytest.raises(ValueError, match="not symmetric"):
    metrics.frechet_distance(d["small_mu1"], np.triu(d["small_sigma1"]), d["small_mu2"],
                             d["small_sigma2"])
  with pytest.raises(ValueError, match="expected 'eigh' or 'pytorch_fid'"):
    metrics.frechet_distance(d["small_mu1"], d["small_sigma1"], d["small_mu2"],
                             d["small_sigma2"], method="svd")
  with pytest.raises(ValueError, match="different dimensions"):
    metrics.frechet_distance(mu1[:10], s1[:10, :10], mu2, s2)


def test_inception_score_splits_in_order():
  d = np.load(os.path.join(FID, "fid_inception_score.npz"))
  mean, std = metrics.inception_score(d["logits"], splits=int(d["splits"]))
  assert mean == pytest.approx(float(d["is_noshuffle_mean"]), rel=1e-12)
  assert std == pytest.approx(float(d["is_noshuffle_std"]), rel=1e-10)
  assert metrics.inception_score(d["logits"], 1)[0] == pytest.approx(
      float(d["is_single_split"]), rel=1e-12)
  # Uneven splits: sizes floor(i N / s) apart, as the bounds in the fixture.
  mean7, _ = metrics.inception_score(d["logits"][:103], 7)
  assert np.isfinite(mean7)


def test_kid_matches_torch_fidelity_subsets_and_value():
  d = np.load(os.path.join(FID, "fid_kid.npz"))
  idx1, idx2 = metrics.kid_subsets(len(d["features1"]), len(d["features2"]),
                                   int(d["num_subsets"]), int(d["subset_size"]))
  np.testing.assert_array_equal(idx1, d["idx1"])
  np.testing.assert_array_equal(idx2, d["idx2"])
  mean, std = metrics.kernel_inception_distance(d["features1"], d["features2"],
                                                int(d["num_subsets"]), int(d["subset_size"]))
  assert mean == pytest.approx(float(d["kid_mean"]), rel=1e-10)
  assert std == pytest.approx(float(d["kid_std"]), rel=1e-9)
