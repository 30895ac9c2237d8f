import os
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest

from conftest import FIXTURES, ROOT, compiled
from score_jax import build
from score_jax import state as state_lib
from score_jax import checkpoints, convert, models, sharding

NCSNV2 = "ncsnv2_cifar10_ngf8_seed0"
NCSN = "ncsn_cifar10_ngf8_seed0"


def fixture_config(tiny, name):
  npz = np.load(os.path.join(FIXTURES, name + ".npz"))
  return tiny(**{
      "model.name": "ncsnv2" if name == NCSNV2 else "ncsn",
      "data.image_size": int(npz["image_size"]), "data.channels": int(npz["channels"]),
      "model.ngf": int(npz["ngf"]), "model.num_classes": int(npz["num_classes"]),
      "model.sigma_begin": float(npz["sigma_begin"]),
      "model.sigma_end": float(npz["sigma_end"]),
      "model.ema": name == NCSNV2}), npz


def rel_err(got, want):
  return float(np.max(np.abs(got - want)) / np.max(np.abs(want)))


def nchw_output(config, variables, npz):
  out = compiled(models.get_model(config).apply)(
      variables, jnp.asarray(npz["x"].transpose(0, 2, 3, 1)), jnp.asarray(npz["y"]))
  return np.asarray(out).transpose(0, 3, 1, 2)


@pytest.mark.parametrize("name,use_ema,key", [
    (NCSNV2, None, "expected"), (NCSNV2, False, "expected_raw"), (NCSN, None, "expected")])
def test_matches_the_official_pytorch_outputs(tiny, name, use_ema, key):
  config, npz = fixture_config(tiny, name)
  variables = convert.load_official_checkpoint(os.path.join(FIXTURES, name + ".pth"), config,
                                               use_ema=use_ema)
  assert rel_err(nchw_output(config, variables, npz), npz[key]) < 1e-4


def test_ema_and_raw_fixture_outputs_differ():
  # Guards the test above: it could not tell EMA from raw weights if they gave one output.
  npz = np.load(os.path.join(FIXTURES, NCSNV2 + ".npz"))
  assert rel_err(npz["expected"], npz["expected_raw"]) > 1e-3


def test_key_mapping():
  assert convert.torch_key_to_flax_path("module.res1.0.conv1.weight") == ("res1_0", "conv1",
                                                                         "kernel")
  assert convert.torch_key_to_flax_path(
      "module.refine2.adapt_convs.1.2_1_conv.weight") == ("refine2", "adapt_convs_1", "2_1_conv",
                                                          "kernel")
  assert convert.torch_key_to_flax_path("module.res2.0.normalize1.embed.weight") == (
      "res2_0", "normalize1", "embed")
  # ConvMeanPool with adjust_padding nests its conv in nn.Sequential(ZeroPad2d, Conv2d).
  assert convert.torch_key_to_flax_path("module.res2.0.conv2.conv.1.bias") == (
      "res2_0", "conv2", "conv", "bias")
  assert convert.torch_key_to_flax_path("module.sigmas") is None


def test_shape_mismatch_names_key_and_shapes(tiny):
  config, _ = fixture_config(tiny, NCSNV2)
  config.model.ngf = 16
  with pytest.raises(convert.CheckpointMismatchError,
                     match=r"begin_conv.weight' has shape \(3, 3, 3, 8\).*\(3, 3, 3, 16\)"):
    convert.load_official_checkpoint(os.path.join(FIXTURES, NCSNV2 + ".pth"), config)


def test_wrong_architecture_is_named(tiny):
  config, _ = fixture_config(tiny, NCSN)
  config.model.name = "ncsnv2"
  with pytest.raises(convert.CheckpointMismatchError, match="embed"):
    convert.load_official_checkpoint(os.path.join(FIXTURES, NCSN + ".pth"), config)


def test_not_a_checkpoint_is_a_clear_error(tmp_path, tiny):
  bad = tmp_path / "bad.pth"
  bad.write_bytes(b"definitely not a checkpoint")
  with pytest.raises(convert.CheckpointMismatchError, match="bad.pth"):
    convert.load_official_checkpoint(str(bad), tiny())


def test_pickled_code_is_not_executed(tmp_path, tiny):
  import pickle
  marker = tmp_path / "ran"

  class Evil:
    def __reduce__(self):
      return (os.system, (f"touch {marker}",))

  path = tmp_path / "evil.pth"
  with open(path, "wb") as f:
    pickle.dump([Evil()], f)
  with pytest.raises(convert.CheckpointMismatchError):
    convert.load_official_checkpoint(str(path), tiny())
  assert not marker.exists()


def test_cli_writes_a_workdir_that_sample_mode_uses(tmp_path):
  wd = str(tmp_path / "wd")
  npz = np.load(os.path.join(FIXTURES, NCSNV2 + ".npz"))
  overrides = ["--config.data.image_size=32", "--config.data.channels=3",
               "--config.model.ngf=8", "--config.model.num_classes=232",
               "--config.model.sigma_begin=50.0", "--config.model.sigma_end=0.01",
               "--config.sampling.batch_size=2",
               "--config.sampling.n_steps_each=1"]
  cmd = [sys.executable, "-m", "score_jax.convert",
         f"--checkpoint={os.path.join(FIXTURES, NCSNV2 + '.pth')}",
         "--config=configs/ncsnv2_mnist.py", f"--workdir={wd}", *overrides]
  res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert res.returncode == 0, res.stderr[-3000:]
  assert "Wrote step 1234" in res.stdout  # the fixture records step 1234

  # The restored state holds the official EMA weights where sampling reads them.
  from configs import ncsnv2_mnist
  c = ncsnv2_mnist.get_config()
  c.data.image_size, c.data.channels, c.model.ngf = 32, 3, 8
  c.model.num_classes, c.model.sigma_begin, c.model.sigma_end = 232, 50.0, 0.01
  c.sampling.batch_size, c.sampling.n_steps_each = 2, 1
  built = build.build(c, "sample")
  target = state_lib.abstract_state(built, sharding.data_mesh())
  state = checkpoints.Checkpointer(wd, built.signature).restore_latest(target)
  assert int(state.step) == 1234
  assert rel_err(nchw_output(c, {"params": state.ema_params}, npz), npz["expected"]) < 1e-4
  assert rel_err(nchw_output(c, {"params": state.params}, npz), npz["expected_raw"]) < 1e-4

  res = subprocess.run([sys.executable, "main.py", "--config=configs/ncsnv2_mnist.py",
                        "--mode=sample", f"--workdir={wd}", *overrides],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert res.returncode == 0, res.stderr[-3000:]
  assert os.path.exists(os.path.join(wd, "samples", "sample_1234.png"))

  # Converting again into the same workdir is refused rather than overwriting.
  res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert res.returncode != 0 and "already holds checkpoints" in res.stderr
