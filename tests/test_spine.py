"""The denoiser spine: every network as D(x; sigma), every sampler on every network, EDM's
own sampler against the official one (replayed), and main.py's summary / convert / sample."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from conftest import FIXTURES, ROOT, run_main, tiny_config
from score_jax import build
from score_jax import state as state_lib
from score_jax import generate, precond, samplers, schedules, sharding, train

MU, S = 0.3, 0.4  # data N(MU, S^2) per pixel, in the [-1, 1] space


def exact_denoiser(x, sigma):
  sigma = jnp.reshape(jnp.asarray(sigma, x.dtype), (-1,) + (1,) * (x.ndim - 1))
  return MU + S**2 / (S**2 + sigma**2) * (x - MU)


def test_epsilon_network_denoiser_is_exact_on_its_grid():
  tab = schedules.ddpm_tables(schedules.ddpm_betas("linear", 1e-4, 0.02, 1000))
  abar = jnp.asarray(tab.alphas_cumprod, jnp.float32)

  def eps(x_t, t):  # E[eps | x_t] for the same data in VP form
    a = abar[t].reshape(-1, 1, 1, 1)
    return jnp.sqrt(1 - a) * (x_t - jnp.sqrt(a) * MU) / (a * S * S + 1 - a)

  den = precond.from_eps(eps, tab.alphas_cumprod)
  grid = precond.ddpm_sigmas(tab.alphas_cumprod)
  assert den.sigma_min == pytest.approx(grid[0]) and den.sigma_max == pytest.approx(grid[-1])
  x = jax.random.normal(jax.random.PRNGKey(0), (4, 3, 3, 2)) * 3
  for t in (0, 10, 500, 999):
    sigma = jnp.full((4,), grid[t], jnp.float32)
    xs = x * (1 + grid[t])
    # D = x - sigma eps cancels to O(1) from |x| ~ 500 at t = 999: float32 error scales with x.
    np.testing.assert_allclose(den.fn(xs, sigma), exact_denoiser(xs, sigma), rtol=0,
                               atol=2e-6 * float(jnp.max(jnp.abs(xs))) + 1e-6)
  # Off the grid, sigma is rounded to the nearest grid value (EDM's round_sigma).
  np.testing.assert_allclose(den.round_sigma(np.array([grid[7] * 1.0001, 1e-9])),
                             [grid[7], grid[0]])
  # eps_from_denoiser inverts the wrapper on the grid.
  t = jnp.array([3, 200, 900, 999])
  x_t = jax.random.normal(jax.random.PRNGKey(1), (4, 3, 3, 2))
  np.testing.assert_allclose(precond.eps_from_denoiser(den, tab.alphas_cumprod)(x_t, t),
                             eps(x_t, t), rtol=1e-4, atol=1e-5)


def test_score_network_on_unit_data_is_the_denoiser_in_signed_units():
  # The same Gaussian in [0, 1] units: mean (MU + 1) / 2, std S / 2, sigma_u = sigma / 2.
  score = lambda u, s: -(u - (MU + 1) / 2) / ((S / 2) ** 2 + s.reshape(-1, 1, 1, 1) ** 2)
  den = precond.from_score(score, 0.01, 1.0)
  assert (den.sigma_min, den.sigma_max) == (0.02, 2.0) and den.round_sigma is None
  x = jax.random.normal(jax.random.PRNGKey(0), (4, 2, 2, 1))
  sigma = jnp.array([0.02, 0.3, 1.0, 2.0])
  np.testing.assert_allclose(den.fn(x, sigma), exact_denoiser(x, sigma), rtol=1e-5, atol=1e-6)
  grid = np.array([1.0, 0.1, 0.01])
  den = precond.from_score(score, 0.01, 1.0, grid=grid)
  np.testing.assert_allclose(den.round_sigma(np.array([1.5, 0.25, 0.01])), [2.0, 0.2, 0.02])


def _replay(fixture, prefix):
  """A denoiser that returns the official output of the recorded call whose input is
  nearest, and checks that the sigma asked for is the recorded one."""
  xs = jnp.asarray(fixture[f"{prefix}_call_x"].transpose(0, 1, 3, 4, 2))
  ds = jnp.asarray(fixture[f"{prefix}_call_D"].astype(np.float64).transpose(0, 1, 3, 4, 2))
  sig = jnp.asarray(fixture[f"{prefix}_call_sigma"])

  def denoise(x, sigma):
    k = jnp.argmin(jnp.sum((xs - x[None]) ** 2, axis=(1, 2, 3, 4)))
    ok = jnp.abs(sig[k] - sigma) <= 1e-9 * sig[k]
    return jnp.where(ok, ds[k], jnp.nan)

  return denoise


def test_edm_sampler_replays_the_official_run():
  d = np.load(os.path.join(FIXTURES, "edm", "edm_sampler_net.npz"))
  kw = json.loads(str(d["kwargs_json"][0]))["sampler_kwargs"]
  noises = d["edm_noises"].transpose(0, 1, 3, 4, 2)
  with jax.enable_x64(True):
    lat = jnp.asarray(d["latents"].transpose(0, 2, 3, 1), jnp.float64)
    nz = jnp.asarray(noises)
    out = samplers.edm_sampler(_replay(d, "edm"), lat, jax.random.PRNGKey(0),
                               noise_fn=lambda i: nz[i], **kw)
    np.testing.assert_allclose(out, d["edm_out"].transpose(0, 2, 3, 1), rtol=0, atol=1e-9)
    kw_abl = json.loads(str(d["kwargs_json"][1]))["sampler_kwargs"]
    out = samplers.ablation_sampler(_replay(d, "abl"), lat, jax.random.PRNGKey(0), **kw_abl)
    np.testing.assert_allclose(out, d["abl_out"].transpose(0, 2, 3, 1), rtol=0, atol=1e-9)


def test_edm_sampler_is_the_ablation_sampler_at_its_defaults():
  lat = jax.random.normal(jax.random.PRNGKey(0), (8, 4, 4, 1))
  for churn in (0.0, 30.0):
    a = samplers.edm_sampler(exact_denoiser, lat, jax.random.PRNGKey(1), S_churn=churn,
                             S_min=0.05, S_max=50)
    b = samplers.ablation_sampler(exact_denoiser, lat, jax.random.PRNGKey(1), S_churn=churn,
                                  S_min=0.05, S_max=50)
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def tiny_ddpm(**overrides):
  from configs import ddpm_mnist
  c = ddpm_mnist.get_config()
  c.model.ch, c.model.num_groups, c.model.ch_mult = 4, 4, (1, 2)
  c.model.attn_resolutions = (14,)
  c.diffusion.num_timesteps = 20
  c.training.batch_size, c.training.n_iters = 8, 4
  c.training.snapshot_freq, c.training.log_freq = 2, 1
  c.sampling.batch_size, c.sampling.num_steps = 8, 3
  c.sampling.progressive_ts = (19, 10, 0)
  c.optim.schedule, c.optim.warmup = "constant", 0
  for key, value in overrides.items():
    section, name = key.split(".")
    c[section][name] = value
  return c


@pytest.mark.parametrize("family", ["ddpm", "ncsnv2", "ncsn"])
def test_every_sampler_runs_on_every_network(family):
  if family == "ddpm":
    c = tiny_ddpm()
  else:
    c = tiny_config(**({"model.name": "ncsn", "model.num_classes": 3} if family == "ncsn"
                       else {}))
    c.diffusion.num_timesteps = 50  # a shorter ancestral chain for the test
    c.sampling.num_steps = 3
  mesh = sharding.data_mesh()
  built = build.build(c)
  state = state_lib.fresh_state(built, mesh)
  data = NamedSharding(mesh, P(sharding.DATA_AXIS))
  # NCSN's (conditional RefineNet) loss gradient is compiled and run in test_precision.py.
  outs = {}
  for method in ("langevin", "ancestral", "edm", "dpmpp_2m", "unipc"):
    c.sampling.method = method
    fn = generate.jit_sample_fn(generate.sample_fn_of(build.build(c), batch_sharding=data),
                                mesh)
    out = np.asarray(fn(state.params, jax.random.PRNGKey(0), 0))
    assert out.shape == (8, 28, 28, 1) and np.all(np.isfinite(out)), method
    outs[method] = out
  assert not np.allclose(outs["ancestral"], outs["edm"])
  assert not np.allclose(outs["dpmpp_2m"], outs["edm"])


def test_ddpm_configs_clip_the_denoiser_the_solvers_see():
  """On a DDPM network D = x - sigma eps: an untrained eps at sigma = 80 puts D far outside
  the data range. The DDPM configs clip it (sampling.clip_denoiser) for every solver; the
  unclipped denoiser is still what guided_denoiser gives."""
  built = build.build(tiny_ddpm())
  assert built.sampler.options.clip_denoiser
  mesh = sharding.data_mesh()
  params = state_lib.fresh_params(built, mesh)
  # What the sampler benchmark starts from: fresh_state's parameters, without the optimizer.
  jax.tree.map(np.testing.assert_array_equal, params, state_lib.fresh_state(built, mesh).params)
  x = 80.0 * jax.random.normal(jax.random.PRNGKey(0), (2, 28, 28, 1))
  raw = generate.guided_denoiser(built.method, params, None, 1.0).fn(x, 80.0)
  clipped = generate.sampling_denoiser(built.method, built.sampler, params).fn(x, 80.0)
  assert float(jnp.max(jnp.abs(raw))) > 1.5
  np.testing.assert_array_equal(clipped, jnp.clip(raw, -1.0, 1.0))
  assert not build.build(tiny_config()).sampler.options.clip_denoiser


def test_sampler_setting_errors_are_clear():
  c = tiny_ddpm(**{"sampling.method": "heun3"})
  with pytest.raises(ValueError, match="sampling.method='heun3'"):
    build.build(c)
  c = tiny_ddpm(**{"sampling.inpainting": True})
  with pytest.raises(ValueError, match="NCSN/NCSNv2"):
    build.build(c)
  c = tiny_ddpm(**{"sampling.variance": "learned"})
  with pytest.raises(ValueError, match="variance='learned'"):
    build.build(c)


_main = run_main


FIXTURE_UNET = ["--config.model.ch=16", "--config.model.ch_mult=(1,2,2,2)",
                "--config.model.num_groups=8", "--config.model.dropout=0.0",
                "--config.sampling.batch_size=2", "--config.sampling.progressive_ts=(999,0)"]


def test_main_converts_a_diffusers_folder_and_samples_from_it(tmp_path):
  wd = str(tmp_path / "wd")
  folder = os.path.join(FIXTURES, "ddpm", "ddpm_unet")
  cfg = "--config=" + os.path.join(ROOT, "configs", "ddpm_cifar10.py")
  _main(cfg, "--mode=convert", f"--workdir={wd}", f"--config.convert.path={folder}",
        *FIXTURE_UNET)
  # The same model, 18 Heun steps: an Euler step to sigma = 0 ends the run.
  _main(cfg, "--mode=sample", f"--workdir={wd}", "--config.sampling.method=edm",
        *FIXTURE_UNET)
  edm = np.load(os.path.join(wd, "samples", "sample_0.npz"))["samples"]
  assert edm.shape == (2, 32, 32, 3) and np.all(np.isfinite(edm))
  # The converted weights are the fixture's: the network's eps through the checkpoint.
  from score_jax import checkpoints, importers
  from configs import ddpm_cifar10
  c = ddpm_cifar10.get_config()
  c.model.ch, c.model.ch_mult, c.model.num_groups, c.model.dropout = 16, (1, 2, 2, 2), 8, 0.0
  built = build.build(c)
  target = state_lib.abstract_state(built, sharding.data_mesh())
  state = checkpoints.Checkpointer(wd, built.signature).restore_latest(target)
  model, variables = importers.load_diffusers_unet(folder)
  x = jax.random.normal(jax.random.PRNGKey(0), (1, 32, 32, 3))
  np.testing.assert_array_equal(model.apply({"params": state.ema_params}, x, jnp.array([5])),
                                model.apply(variables, x, jnp.array([5])))
  # A second conversion into the same workdir is refused, in one line, nothing overwritten.
  before = sorted(os.listdir(os.path.join(wd, "checkpoints")))
  out = _main(cfg, "--mode=convert", f"--workdir={wd}", f"--config.convert.path={folder}",
              *FIXTURE_UNET, expect_rc=1)
  assert "already holds checkpoints" in out.stderr and "Traceback" not in out.stderr
  assert sorted(os.listdir(os.path.join(wd, "checkpoints"))) == before


@pytest.mark.parametrize("extra,match", [
    (["--config.model.ch=32"], "block_out_channels"),
    (["--config.diffusion.num_timesteps=500", "--config.sampling.progressive_ts=(0,)"],
     "num_train_timesteps=1000"),
    (["--config.model.name=ncsnv2"], "expected an official checkpoint.pth"),
])
def test_main_convert_mismatch_is_one_line_and_writes_nothing(tmp_path, extra, match):
  wd = tmp_path / "wd"
  folder = os.path.join(FIXTURES, "ddpm", "ddpm_unet")
  args = [a for a in FIXTURE_UNET if not any(a.split("=")[0] == e.split("=")[0] for e in extra)]
  out = _main("--config=" + os.path.join(ROOT, "configs", "ddpm_cifar10.py"), "--mode=convert",
              f"--workdir={wd}", f"--config.convert.path={folder}", *args, *extra,
              expect_rc=1)
  assert match in out.stderr and "Traceback" not in out.stderr, out.stderr
  assert len(out.stderr.strip().splitlines()) == 1
  assert not wd.exists() or not any(wd.rglob("*"))


def test_main_summary_prints_the_exact_parameter_count():
  out = _main("--config=" + os.path.join(ROOT, "configs", "ddpm_cifar10.py"), "--mode=summary")
  assert "params: 35746307" in out.stdout
  flops = float(out.stdout.split("flops per image: ")[1].split()[0])
  assert 1e10 < flops < 1.5e10  # ~6 GMACs, as published for this network


def test_ddpm_trains_resumes_and_samples_with_the_progressive_figure(tmp_path):
  from score_jax import checkpoints
  wd = str(tmp_path / "wd")
  c = tiny_ddpm()
  state = train.train_and_evaluate(build.build(c), wd)
  assert int(state.step) == 4
  assert os.path.exists(os.path.join(wd, "samples", "image_grid_4.png"))
  lines = open(os.path.join(wd, "metrics.jsonl")).read().splitlines()
  assert [json.loads(l)["step"] for l in lines] == [1, 2, 3, 4]
  assert all(np.isfinite(json.loads(l)["loss"]) for l in lines)
  samples = generate.sample(build.build(c), wd)
  assert samples.shape == (8, 28, 28, 1) and np.all(np.isfinite(samples))
  prog = np.load(os.path.join(wd, "samples", "progressive_4.npz"))
  assert prog["predicted_x0"].shape == (3, 8, 28, 28, 1)
  np.testing.assert_allclose(prog["predicted_x0"][-1], samples, rtol=1e-5, atol=1e-6)
  # A schedule other than the one the network was trained with is refused, naming it.
  with pytest.raises(checkpoints.CheckpointMismatchError, match="diffusion.num_timesteps"):
    generate.sample(build.build(tiny_ddpm(**{"diffusion.num_timesteps": 30})), wd)
  # Resuming continues the step count with the same method.
  c2 = tiny_ddpm(**{"training.n_iters": 6})
  assert int(train.train_and_evaluate(build.build(c2), wd).step) == 6


def test_summary_runs_on_a_refinenet_config():
  from configs import ncsnv2_mnist
  from score_jax import summary
  s = summary.summarize(build.build(ncsnv2_mnist.get_config()))
  assert s["model"] == "ncsnv2" and s["params"] > 0 and s["flops_per_image"] > 0
