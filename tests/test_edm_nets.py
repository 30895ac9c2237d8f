"""EDM's networks and preconditioners against the official code's outputs (tests/fixtures/edm,
random perturbed weights), read from official-format snapshots without running them."""

import glob
import json
import os
import pickle

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import ROOT, compiled
from score_jax import precond
from score_jax.importers import edm_pkl, load_edm_pkl
from score_jax.importers.torch_pickle import UnsafePickleError
from score_jax.models import edm_layers

FIX = os.path.join(ROOT, "tests", "fixtures", "edm")
PKLS = sorted(glob.glob(os.path.join(FIX, "pkl_*.pkl"))) + [
    os.path.join(FIX, "edm_snapshot_tiny.pkl")]
nhwc = lambda a: jnp.asarray(np.asarray(a).transpose(0, 2, 3, 1))
nchw = lambda a: np.asarray(a).transpose(0, 3, 1, 2)


def assert_close_D(got, want, sigma, tol=5e-5):
  """The fixtures' rule: |D - D_ref| <= tol (1 + sigma) (VP/VE/iDDPM D grows like sigma)."""
  s = np.broadcast_to(np.asarray(sigma, np.float32).reshape(-1, 1, 1, 1), want.shape)
  err = np.abs(np.asarray(got) - want) / (1 + s)
  assert err.max() <= tol, err.max()


@pytest.mark.parametrize("path", PKLS, ids=os.path.basename)
def test_every_official_snapshot_gives_the_official_denoiser(path):
  z = np.load(path[:-4] + ".npz")
  model, variables = load_edm_pkl(path)
  labels = z["class_labels"] if "class_labels" in z.files else None
  d = compiled(model.apply)(variables, nhwc(z["x"]), z["sigma"], labels)
  assert_close_D(nchw(d), z["D"], z["sigma"])


def snapshot_for(case, net):
  return os.path.join(FIX, f"pkl_{case}_{net}.pkl")


def inner(model, variables, x, c_noise, labels=None, aug=None):
  return model.apply(variables, x, c_noise, labels, aug, method=lambda m, *a: m.model(*a))


@pytest.mark.parametrize("case,net", [("songunet_ddpmpp", "vp"), ("songunet_ddpmpp", "ve"),
                                      ("songunet_ddpmpp", "edm"), ("songunet_ncsnpp", "ve"),
                                      ("songunet_ncsnpp", "edm"), ("dhariwalunet_adm", "iddpm"),
                                      ("dhariwalunet_adm_cond_attn", "edm"),
                                      ("songunet_ddpmpp_cond_aug", "edm")])
def test_coefficients_and_raw_network_output(case, net):
  z = np.load(os.path.join(FIX, f"{case}.npz"))
  model, variables = load_edm_pkl(snapshot_for(case, net))
  sigma = jnp.asarray(z[f"{net}_sigma"])
  coef = {"vp": lambda s: precond.vp_coefficients(s),
          "ve": precond.ve_coefficients, "edm": precond.edm_coefficients,
          "iddpm": lambda s: precond.iddpm_coefficients(s, variables["params"]["u"])}[net](sigma)
  for name, got in zip(("c_skip", "c_out", "c_in", "c_noise"), coef):
    # VP's c_noise cancels digits at small sigma (sqrt(beta_min^2 + tiny) - beta_min): XLA's
    # float32 log and sqrt leave 4e-7 absolute where c_noise is 0.0095.
    atol = 1e-6 if (net, name) == ("vp", "c_noise") else 1e-7
    np.testing.assert_allclose(got, z[f"{net}_{name}"], rtol=1e-5 if net == "vp" else 1e-6,
                               atol=atol, err_msg=name)
  labels = z["class_labels"] if "class_labels" in z.files else None
  aug = z["augment_labels"] if "augment_labels" in z.files else None
  f = inner(model, variables, nhwc(z[f"{net}_c_in"][:, None, None, None] * z[f"{net}_x"]),
            jnp.asarray(z[f"{net}_c_noise"]), labels, aug)
  np.testing.assert_allclose(nchw(f), z[f"{net}_F"], atol=5e-5)
  d = model.apply(variables, nhwc(z[f"{net}_x"]), sigma, labels, aug)
  assert_close_D(nchw(d), z[f"{net}_D"], z[f"{net}_sigma"])


def test_scalar_sigma_missing_labels_and_missing_augment_labels():
  z = np.load(os.path.join(FIX, "songunet_ddpmpp.npz"))
  model, variables = load_edm_pkl(snapshot_for("songunet_ddpmpp", "edm"))
  d = model.apply(variables, nhwc(z["edm_x"]), z["edm_scalar_sigma"])
  assert_close_D(nchw(d), z["edm_D_scalar_sigma"], z["edm_scalar_sigma"])

  z = np.load(os.path.join(FIX, "songunet_ddpmpp_cond_aug.npz"))
  model, variables = load_edm_pkl(snapshot_for("songunet_ddpmpp_cond_aug", "edm"))
  x, s = nhwc(z["edm_x"]), z["edm_sigma"]
  assert_close_D(nchw(model.apply(variables, x, s, z["class_labels"])), z["edm_D_noaug"], s)
  assert_close_D(nchw(model.apply(variables, x, s)), z["edm_D_nolabel_noaug"], s)

  z = np.load(os.path.join(FIX, "dhariwalunet_adm_cond_attn.npz"))
  model, variables = load_edm_pkl(snapshot_for("dhariwalunet_adm_cond_attn", "edm"))
  assert_close_D(nchw(model.apply(variables, nhwc(z["edm_x"]), z["edm_sigma"])),
                 z["edm_D_nolabel"], z["edm_sigma"])


def test_iddpm_u_table_and_rounding_as_the_official_code():
  z = np.load(os.path.join(FIX, "dhariwalunet_adm.npz"))
  _, variables = load_edm_pkl(snapshot_for("dhariwalunet_adm", "iddpm"))
  u = variables["params"]["u"]
  np.testing.assert_array_equal(u, z["u"])  # the snapshot's table, not a recomputed one
  np.testing.assert_allclose(precond.iddpm_u_table(), z["u"], rtol=1e-4)
  # Three hard entries at the end, where plain argmin |sigma - u| picks a neighbour.
  np.testing.assert_array_equal(precond.iddpm_round_index(z["round_sigma_in"], u),
                                z["round_sigma_index"])
  np.testing.assert_array_equal(precond.iddpm_round_index(z["iddpm_sigma"], u),
                                z["iddpm_round_index"])


@pytest.mark.parametrize("case", ["unetblock_cph", "unetblock_multihead"])
def test_unet_block(case):
  z = np.load(os.path.join(FIX, f"{case}.npz"))
  p = np.load(os.path.join(FIX, f"{case}_params.npz"))
  kw = json.loads(str(z["kwargs_json"][0]))["kwargs"]
  block = edm_layers.UNetBlock(
      kw["out_channels"], up=kw.get("up", False), down=kw.get("down", False),
      attention=kw.get("attention", False), num_heads=kw.get("num_heads"),
      channels_per_head=kw.get("channels_per_head", 64), skip_scale=kw.get("skip_scale", 1.0),
      eps=kw.get("eps", 1e-5), resample_filter=tuple(kw.get("resample_filter", (1, 1))),
      resample_proj=kw.get("resample_proj", False),
      adaptive_scale=kw.get("adaptive_scale", True))
  params = edm_pkl.params_from_state_dict({f"m.{k}": p[k] for k in p.files})["m"]
  out = block.apply({"params": params}, nhwc(z["x"]), jnp.asarray(z["emb"]))
  np.testing.assert_allclose(nchw(out), z["out"], atol=5e-5)


class _Boom:
  """Pickles as a call to os.system: a naive pickle.load would run it."""

  def __init__(self, marker):
    self.marker = marker

  def __reduce__(self):
    return os.system, (f"touch {self.marker}",)


def test_a_snapshot_that_would_run_code_is_refused_without_running_it(tmp_path):
  marker = tmp_path / "ran"
  path = tmp_path / "evil.pkl"
  path.write_bytes(pickle.dumps({"ema": _Boom(marker)}))
  with pytest.raises(UnsafePickleError, match="posix.system|os.system"):
    load_edm_pkl(str(path))
  assert not marker.exists()


def test_unknown_class_truncated_file_and_labels_on_an_unconditional_net(tmp_path):
  data = open(PKLS[-1], "rb").read()
  # The persistence record's class name replaced by one EDM never pickles.
  evil = tmp_path / "unknown.pkl"
  assert b"\x8c\nEDMPrecond" in data  # SHORT_BINUNICODE of the record's class_name
  evil.write_bytes(data.replace(b"\x8c\nEDMPrecond", b"\x8c\nEvilPrecon"))
  with pytest.raises(UnsafePickleError, match="'EvilPrecon'"):
    load_edm_pkl(str(evil))
  cut = tmp_path / "cut.pkl"
  cut.write_bytes(data[:len(data) // 2])
  with pytest.raises(ValueError, match="truncated"):
    load_edm_pkl(str(cut))
  model, variables = load_edm_pkl(PKLS[-1])
  with pytest.raises(ValueError, match="unconditional network"):
    model.apply(variables, jnp.zeros((1, 8, 8, 3)), jnp.ones(1), jnp.ones((1, 10)))
