"""DDPM against the original formulas and diffusers' outputs (tests/fixtures/ddpm, README there):
the U-Net and its import, the schedule, single ancestral steps, a full 1000-step run with
recorded noise, the exact output law on Gaussian data, and L_simple with its gradients."""

import json
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import FIXTURES, compiled
from score_jax import losses, samplers, schedules
from score_jax.convert import CheckpointMismatchError
from score_jax.importers import diffusers_unet, load_diffusers_unet

DDPM = os.path.join(FIXTURES, "ddpm")
FOLDER = os.path.join(DDPM, "ddpm_unet")
BETAS = schedules.ddpm_betas("linear", 1e-4, 0.02, 1000)


def nhwc(a):
  return np.asarray(a).transpose(0, 2, 3, 1)


def rel(a, b):
  return float(np.max(np.abs(np.asarray(a, np.float64) - b)) / np.max(np.abs(b)))


@pytest.fixture(scope="module")
def unet():
  return load_diffusers_unet(FOLDER)


def test_unet_matches_diffusers(unet):
  model, variables = unet
  d = np.load(os.path.join(DDPM, "ddpm_unet.npz"))
  out = compiled(model.apply)(variables, nhwc(d["x"]), d["t"].astype(np.int32))
  assert out.shape == nhwc(d["expected"]).shape
  assert rel(out, nhwc(d["expected"])) < 1e-5
  assert sum(v.size for v in jax.tree.leaves(variables)) == 565_315
  assert model.attention_head_dim is None  # null in config.json: one head


def _copy_folder(tmp_path, edit_config=None, edit_tensors=None):
  from safetensors.numpy import load_file, save_file
  dst = tmp_path / "unet"
  shutil.copytree(FOLDER, dst)
  os.chmod(dst, 0o755)
  for f in dst.iterdir():
    os.chmod(f, 0o644)
  if edit_config:
    cfg = json.loads((dst / "config.json").read_text())
    edit_config(cfg)
    (dst / "config.json").write_text(json.dumps(cfg))
  if edit_tensors:
    file = str(dst / diffusers_unet.WEIGHTS_FILE)
    save_file(edit_tensors(dict(load_file(file))), file)
  return str(dst)


def test_legacy_attention_names_load_to_the_same_network(unet, tmp_path):
  legacy = {"to_q": "query", "to_k": "key", "to_v": "value", "to_out.0": "proj_attn"}

  def rename(tensors):
    out = {}
    for k, v in tensors.items():
      for new, old in legacy.items():
        k = k.replace(f".{new}.", f".{old}.")
      out[k] = v
    assert any(".proj_attn." in k for k in out)
    return out

  model, variables = load_diffusers_unet(_copy_folder(tmp_path, edit_tensors=rename))
  d = np.load(os.path.join(DDPM, "ddpm_unet.npz"))
  x, t = nhwc(d["x"]), d["t"].astype(np.int32)
  np.testing.assert_array_equal(model.apply(variables, x, t), unet[0].apply(unet[1], x, t))


def test_missing_config_keys_take_the_class_defaults(tmp_path):
  def drop(cfg):
    del cfg["attention_head_dim"]

  model, _ = load_diffusers_unet(_copy_folder(tmp_path, edit_config=drop))
  assert model.attention_head_dim == 8  # diffusers' default: 32 channels -> 4 heads of 8
  # The google/ddpm-cifar10-32 config.json as published (no attention_head_dim key).
  cfg = dict(diffusers_unet.UNET2D_DEFAULTS, **diffusers_unet.GOOGLE_DDPM_CIFAR10)
  kw = diffusers_unet.unet_kwargs(cfg)
  from score_jax.models.ddpm import DDPMUNet
  m = DDPMUNet(**kw)
  shapes = jax.eval_shape(lambda: m.init(jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3)),
                                         jnp.zeros((1,), jnp.int32)))
  assert sum(int(np.prod(v.shape)) for v in jax.tree.leaves(shapes)) == 35_746_307
  assert kw["attention_head_dim"] == 8 and kw["attn_levels"] == (1,)


@pytest.mark.parametrize("edit,match", [
    (lambda c: c.update(down_block_types=["DownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D",
                                          "DownBlock2D"]), "CrossAttnDownBlock2D"),
    (lambda c: c.update(up_block_types=["UpBlock2D", "UpBlock2D", "UpBlock2D", "UpBlock2D"]),
     "attention at the same levels"),
    (lambda c: c.update(time_embedding_type="fourier"), "time_embedding_type='fourier'"),
    (lambda c: c.update(block_out_channels=[16, 32, 32, 64]), "shape"),
])
def test_bad_config_is_one_clear_error(tmp_path, edit, match):
  with pytest.raises(CheckpointMismatchError, match=match) as e:
    load_diffusers_unet(_copy_folder(tmp_path, edit_config=edit))
  assert "\n" not in str(e.value)


def test_missing_or_misshapen_tensor_is_named(tmp_path):
  key = "down_blocks.1.attentions.0.to_k.weight"
  with pytest.raises(CheckpointMismatchError, match="to_k/kernel"):
    load_diffusers_unet(_copy_folder(
        tmp_path / "a", edit_tensors=lambda t: {k: v for k, v in t.items() if k != key}))
  with pytest.raises(CheckpointMismatchError, match=key.replace(".", r"\.")):
    load_diffusers_unet(_copy_folder(
        tmp_path / "b", edit_tensors=lambda t: dict(t, **{key: t[key][:, :8]})))
  with pytest.raises(FileNotFoundError, match="config.json"):
    load_diffusers_unet(str(tmp_path / "nowhere"))


def test_schedule_tables_are_the_original_float64_ones():
  d = np.load(os.path.join(DDPM, "ddpm_schedule.npz"))
  tab = schedules.ddpm_tables(BETAS)
  for name in tab._fields:
    ref = "fixedlarge_log_variance_f64" if name == "fixed_large_log_variance" else name + "_f64"
    np.testing.assert_allclose(getattr(tab, name), d[ref], rtol=1e-13, atol=0)
  with pytest.raises(ValueError, match="beta_start"):
    schedules.ddpm_betas("linear", 0.02, 1e-4, 1000)


@pytest.mark.parametrize("variance", ["fixed_small", "fixed_large"])
@pytest.mark.parametrize("clip", [0, 1])
def test_single_steps_match_the_original(variance, clip):
  d = np.load(os.path.join(DDPM, "ddpm_schedule.npz"))
  key = f"{variance}__clip{clip}"
  for k, t in enumerate(d["step_t"]):
    with jax.enable_x64(True):
      prev, x0 = samplers.ddpm_step(jnp.asarray(d["step_sample"][k]), d["step_model_output"][k],
                                    int(t), d["step_noise"][k], BETAS, variance, bool(clip))
      np.testing.assert_allclose(prev, d[f"step_prev_orig64__{key}"][k], rtol=0, atol=1e-12)
      np.testing.assert_allclose(x0, d[f"step_x0_orig64__{key}"][k], rtol=0, atol=1e-12)
    prev, _ = samplers.ddpm_step(jnp.asarray(d["step_sample_f32"][k]),
                                 d["step_model_output_f32"][k], int(t),
                                 d["step_noise_f32"][k], BETAS, variance, bool(clip))
    assert prev.dtype == jnp.float32
    np.testing.assert_allclose(prev, d[f"step_prev_orig32__{key}"][k], rtol=0, atol=2e-6)


def _gaussian_eps(mu, s, dtype):
  """E[eps | x_t] for data N(mu, s^2 I): the exact noise prediction (README of the fixture)."""
  abar = jnp.asarray(schedules.ddpm_tables(BETAS).alphas_cumprod, dtype)

  def eps(x, t):
    a = abar[t].reshape(-1, 1, 1, 1)
    return jnp.sqrt(1 - a) * (x - jnp.sqrt(a) * mu) / (a * s * s + 1 - a)

  return eps


@pytest.mark.parametrize("variance", ["fixed_small", "fixed_large"])
@pytest.mark.parametrize("clip", [0, 1])
def test_full_run_with_recorded_noise_matches_the_original(variance, clip):
  d = np.load(os.path.join(DDPM, "ddpm_ancestral.npz"))
  key = f"{variance}__clip{clip}"
  s = float(d["s"])
  noises = d["noises"].astype(np.float64).transpose(0, 1, 3, 4, 2)  # noises[i]: t = 999 - i
  for dtype, ref, tol in ((jnp.float64, "final_orig64__", 1e-9),
                          (jnp.float32, "final_orig32__", 1e-5)):
    with jax.enable_x64(dtype == jnp.float64):
      mu = jnp.asarray(d["mu"].transpose(1, 2, 0), dtype)
      nz = jnp.asarray(noises, dtype)
      out = samplers.ddpm_ancestral(
          _gaussian_eps(mu, s, dtype), jnp.asarray(nhwc(d["latents"]), dtype),
          jax.random.PRNGKey(0), BETAS, variance, bool(clip),
          noise_fn=lambda t: nz[jnp.clip(999 - t, 0, 998)])
      assert out.dtype == dtype
      np.testing.assert_allclose(out, nhwc(d[ref + key]), rtol=0, atol=tol)


@pytest.mark.parametrize("variance", ["fixed_small", "fixed_large"])
def test_output_law_on_gaussian_data_is_the_closed_form(variance):
  """With the exact eps of N(mu, s^2) data and no clipping, each step is affine in x_t plus
  Gaussian noise, so the final mean and variance follow a float64 recursion. 8,192 chains
  of 4x4x4 independent pixels (pooled over the 16 positions of each channel) must match it
  to sampling error; the other variance choice's law (3% apart) must not."""
  mu, s, chains = np.array([-0.5, 0.0, 0.3, 0.8]), 0.375, 8192
  n = chains * 16
  tab = schedules.ddpm_tables(BETAS)

  def law(var_kind):
    m, v = np.zeros(4), np.ones(4)
    logvar = (tab.posterior_log_variance_clipped if var_kind == "fixed_small"
              else tab.fixed_large_log_variance)
    for t in range(999, -1, -1):
      a = tab.alphas_cumprod[t]
      g = np.sqrt(1 - a) / (a * s * s + 1 - a)  # eps = g (x - sqrt(a) mu)
      x0_coef = tab.sqrt_recip_alphas_cumprod[t] - tab.sqrt_recipm1_alphas_cumprod[t] * g
      x0_off = tab.sqrt_recipm1_alphas_cumprod[t] * g * np.sqrt(a) * mu
      k = tab.posterior_mean_coef1[t] * x0_coef + tab.posterior_mean_coef2[t]
      m = k * m + tab.posterior_mean_coef1[t] * x0_off
      v = k * k * v + (np.exp(logvar[t]) if t > 0 else 0.0)
    return m, v

  eps = _gaussian_eps(jnp.asarray(mu, jnp.float32).reshape(1, 1, 4), s, jnp.float32)
  x_t = jax.random.normal(jax.random.PRNGKey(0), (chains, 4, 4, 4))
  out = np.asarray(jax.jit(lambda x, k: samplers.ddpm_ancestral(eps, x, k, BETAS, variance,
                                                                False))(
      x_t, jax.random.PRNGKey(1)), np.float64).reshape(n, 4)
  m, v = law(variance)
  assert np.all(np.abs(out.mean(0) - m) < 4 * np.sqrt(v / n))
  assert np.all(np.abs(out.var(0) / v - 1) < 4 * np.sqrt(2 / n))
  other = law("fixed_large" if variance == "fixed_small" else "fixed_small")[1]
  assert np.any(np.abs(out.var(0) / other - 1) > 4 * np.sqrt(2 / n))


def test_sampler_noise_depends_on_sample_ids_only():
  eps = lambda x, t: 0.1 * x
  x = jax.random.normal(jax.random.PRNGKey(0), (6, 2, 2, 1))
  betas = schedules.ddpm_betas("linear", 1e-4, 0.02, 30)
  full = samplers.ddpm_ancestral(eps, x, jax.random.PRNGKey(3), betas)
  part = samplers.ddpm_ancestral(eps, x[2:5], jax.random.PRNGKey(3), betas,
                                 sample_ids=jnp.arange(2, 5))
  np.testing.assert_allclose(part, full[2:5], rtol=1e-6)
  with pytest.raises(ValueError, match="variance='learned'"):
    samplers.ddpm_ancestral(eps, x, jax.random.PRNGKey(3), betas, "learned")


def test_progressive_snapshots_are_the_predicted_x0():
  eps = lambda x, t: 0.5 * x
  x = jax.random.normal(jax.random.PRNGKey(0), (3, 2, 2, 1))
  betas = schedules.ddpm_betas("linear", 1e-4, 0.02, 20)
  out, snaps = samplers.ddpm_ancestral(eps, x, jax.random.PRNGKey(1), betas,
                                       snapshot_ts=(19, 5, 0))
  tab = schedules.ddpm_tables(betas)
  first = np.clip(tab.sqrt_recip_alphas_cumprod[19] * x - tab.sqrt_recipm1_alphas_cumprod[19]
                  * 0.5 * x, -1, 1)
  np.testing.assert_allclose(snaps[0], first, rtol=1e-5)
  assert snaps.shape == (3,) + x.shape
  # At t = 0 the posterior mean is x_0 itself (coef1 = 1, coef2 = 0) and no noise is added.
  np.testing.assert_allclose(snaps[2], out, rtol=1e-5)


def test_l_simple_and_its_gradients_match_diffusers(unet):
  model, variables = unet
  d = np.load(os.path.join(DDPM, "ddpm_train_loss.npz"))
  tab = schedules.ddpm_tables(BETAS)

  def loss(params):
    eps = lambda x, t: model.apply({"params": params}, x, t)
    per = losses.ddpm_loss_per_sample(eps, jnp.asarray(nhwc(d["x0"])), d["t"].astype(np.int32),
                                      jnp.asarray(nhwc(d["noise"])), tab.sqrt_alphas_cumprod,
                                      tab.sqrt_one_minus_alphas_cumprod)
    return jnp.mean(per), per

  (value, per), grads = compiled(jax.value_and_grad(loss, has_aux=True))(variables["params"])
  assert abs(float(value) - float(d["loss"])) / float(d["loss"]) < 1e-5
  np.testing.assert_allclose(per, d["loss_per_example"], rtol=1e-5)
  g_in = np.asarray(grads["conv_in"]["kernel"]).transpose(3, 2, 0, 1)  # HWIO -> OIHW
  assert rel(g_in, d["grad_conv_in_weight"]) < 1e-4
  assert rel(grads["conv_out"]["bias"], d["grad_conv_out_bias"]) < 1e-4
  norm = np.sqrt(sum(float(jnp.sum(g.astype(jnp.float64) ** 2)) for g in jax.tree.leaves(grads)))
  assert abs(norm - float(d["grad_global_norm"])) / float(d["grad_global_norm"]) < 1e-4
