"""Runs the benchmark small: it must produce its whole table (no timing is asserted)."""

import math

from experiments import benchmark


def test_benchmark_produces_every_number(tiny):
  results = benchmark.benchmark(tiny(), train_steps=2, sample_levels=2, repeats=1)
  for key in ("train compile (s)", "train steps/s", "train images/s", "sampler compile (s)",
              "sampler steps/s", "sampler image-steps/s", "max-pool grad, flax (ms)",
              "max-pool grad, score_jax (ms)"):
    assert math.isfinite(results[key]) and results[key] > 0, key
  assert results["sampler steps timed"] == 2 * 2  # 2 levels x n_steps_each 2
  assert results["train batch"] == 8
  table = benchmark.format_table(results)
  assert "train steps/s" in table and len(table.splitlines()) == len(results)


def test_benchmark_times_ddpm_training_and_the_ancestral_sampler():
  from test_spine import tiny_ddpm
  results = benchmark.benchmark(tiny_ddpm(), train_steps=2, sample_levels=3, repeats=1)
  assert results["sampler steps timed"] == 3
  for key in ("train steps/s", "sampler steps/s"):
    assert math.isfinite(results[key]) and results[key] > 0, key
  assert "max-pool grad, flax (ms)" not in results


def test_benchmark_times_edm_training_and_its_sampler():
  from test_edm_train import tiny_edm
  results = benchmark.benchmark(tiny_edm(**{"model.label_dim": 10}), train_steps=2,
                                sample_levels=3, repeats=1)
  assert results["sampler steps timed"] == 5  # 3 Heun steps: 2 x 3 - 1 network calls
  for key in ("train steps/s", "sampler steps/s"):
    assert math.isfinite(results[key]) and results[key] > 0, key


def test_input_pipeline_throughput_is_measured():
  for fmt in ("jpeg", "png"):
    rate = benchmark.data_throughput(fmt, size=32, n=8, batch=4, batches=2, threads=1)
    assert math.isfinite(rate) and rate > 0


def test_side_by_side_shapes_records_and_table():
  import pytest  # pylint: disable=g-import-not-at-top
  assert benchmark.parse_shape("ncsnv2_cifar10_ngf128_b8") == {"model": "ncsnv2", "ngf": 128,
                                                               "batch": 8}
  assert benchmark.parse_shape("ddpm_cifar10_b8") == {"model": "ddpm", "batch": 8}
  assert benchmark.parse_shape("edm_cifar10_ddpmpp_b8") == {"model": "edm", "arch": "ddpmpp",
                                                            "batch": 8}
  assert benchmark.parse_shape("edm_cifar10_adm_mc64_b4") == {
      "model": "edm", "arch": "adm", "model_channels": 64, "batch": 4}
  assert benchmark.parse_shape("ddpm_cifar10_dpmpp_b8") == {"model": "ddpm",
                                                            "sampler": "dpmpp_2m", "batch": 8}
  for bad in ("ncsnv2_cifar10_ngf32", "ddpm_cifar10_b8x", "ncsn_cifar10_ngf32_b16",
              "edm_cifar10_adm_b4", "edm_cifar10_ncsnpp_b8"):
    with pytest.raises(ValueError, match="ncsnv2_cifar10_ngf<N>_b<B>, ddpm_cifar10_b<B>, "
                       "ddpm_cifar10_dpmpp_b<B>, edm_cifar10_ddpmpp_b<B> or "
                       "edm_cifar10_adm_mc<C>_b<B>"):
      benchmark.parse_shape(bad)
  assert benchmark.official_of("ncsnv2_cifar10_ngf32_b16", None) is None
  assert benchmark.official_of("ncsnv2_cifar10_ngf32_b16", "/x") == "ermongroup/ncsnv2"
  assert benchmark.official_of("edm_cifar10_ddpmpp_b8", "/x") is None
  assert benchmark.official_of("edm_cifar10_ddpmpp_b8", None, "/edm") == "NVlabs/edm"
  # The EDM shapes are EDM's CIFAR-10 networks at the benchmark's batch, deterministic.
  adm = benchmark.shape_config(benchmark.parse_shape("edm_cifar10_adm_mc64_b4"))
  assert (adm.model.arch, adm.model.model_channels, adm.training.batch_size) == (
      "DhariwalUNet", 64, 4)
  assert adm.data.image_size == 32 and adm.model.augment_p == 0 and adm.sampling.S_churn == 0
  ours = benchmark.measure_ours({"model": "ncsnv2", "ngf": 4, "batch": 2}, "sample", steps=5)
  assert math.isfinite(ours["steps_per_s"]) and ours["steps_per_s"] > 0
  assert set(ours) >= {"compile_s_L10", "compile_s_L2311"}
  records = [{"name": "ncsnv2_cifar10_ngf4_b2", "job": "sample",
              "ours_steps_per_s": ours["steps_per_s"], "official_steps_per_s": None,
              "ratio": None, "official": None, "ours_compile_s": ours["compile_s"],
              "ours_peak_rss_mb": 700.0, "official_peak_rss_mb": None,
              "ours_compile_s_L10": ours["compile_s_L10"],
              "ours_compile_s_L2311": ours["compile_s_L2311"],
              "ours_faults_per_step": ours["faults_per_step"], "official_faults_per_step": None,
              "ours_kernel_s_per_step": ours["kernel_s_per_step"],
              "official_kernel_s_per_step": None}]
  assert ours["faults_per_step"] >= 0 and ours["kernel_s_per_step"] >= 0
  table = benchmark.format_records(records).splitlines()
  assert len(table) == 4 and "ncsnv2_cifar10_ngf4_b2" in table[1] and " - " in table[1]
  assert "page faults" in table[2] and table[2].endswith("official - / -")
  assert "L = 10:" in table[3] and "L = 2311:" in table[3]


def test_memory_table_and_a_topology_that_cannot_be_made():
  import importlib.util  # pylint: disable=g-import-not-at-top
  import pytest  # pylint: disable=g-import-not-at-top
  rows = [{"dtype": d, "remat": r, "arguments": 10.0, "outputs": 10.0, "aliased": 10.0,
           "temporaries": t, "total": 10.0 + t}
          for d, r, t in (("float32", False, 90.0), ("float32", True, 40.0))]
  table = benchmark.format_memory(rows, "somewhere").splitlines()
  assert table[0].endswith("somewhere") and len(table) == 4
  assert table[3].split()[-2:] == ["50.0", "0.50"]  # total, and its ratio to the first row
  if importlib.util.find_spec("libtpu") is None:
    with pytest.raises(ValueError, match="--topology='v5p:2x2x1'.*libtpu"):
      benchmark.topology_mesh("v5p:2x2x1")


def test_train_records_carry_flops_and_the_convolution_probe():
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  # XLA's count: a [64, 32] @ [32, 16] product is 2 * 64 * 32 * 16 flops.
  mm = jax.jit(jnp.matmul).lower(jnp.zeros((64, 32)), jnp.zeros((32, 16))).compile()
  assert benchmark.program_gflop(mm) * 1e9 == 2 * 64 * 32 * 16
  ours = benchmark.measure_ours({"model": "ncsnv2", "ngf": 4, "batch": 2}, "train", steps=2)
  assert 0.05 < ours["gflop_per_step"] < 0.5  # the ngf-4 net's step: 0.13 GFLOP
  conv = benchmark.conv_gflops("ours", repeats=2)
  assert math.isfinite(conv) and conv > 0
  gflops = ours["gflop_per_step"] * ours["steps_per_s"]
  record = {"name": "ncsnv2_cifar10_ngf4_b2", "job": "train",
            "ours_steps_per_s": ours["steps_per_s"], "official_steps_per_s": None,
            "ratio": None, "official": None, "ours_compile_s": ours["compile_s"],
            "ours_peak_rss_mb": 700.0, "official_peak_rss_mb": None,
            "gflop_per_step": ours["gflop_per_step"], "ours_gflops": gflops,
            "official_gflops": None, "ours_conv_gflops": conv, "official_conv_gflops": None}
  table = benchmark.format_records([record]).splitlines()
  assert len(table) == 3 and "GFLOP per step" in table[2]
  assert f"ours {gflops:.0f} GFLOP/s, official -" in table[2]
  assert f"XLA {conv:.0f}, torch - GFLOP/s" in table[2]


def test_side_by_side_runs_its_children_ours_only():
  records = benchmark.side_by_side(["ncsnv2_cifar10_ngf4_b2"], None, rounds=1, threads=1,
                                   train_steps=2, sample_steps=5, warm=False)
  train, sample = records
  assert (train["job"], sample["job"]) == ("train", "sample")
  assert train["ratio"] is None and train["official_gflops"] is None
  assert train["ours_gflops"] == train["gflop_per_step"] * train["ours_steps_per_s"] > 0
  assert train["ours_conv_gflops"] > 0 and "gflop_per_step" not in sample
  assert sample["ours_compile_s_L2311"] > 0


def test_a_second_process_loads_the_sampler_from_the_persistent_cache():
  record = benchmark.warm_start("ncsnv2_cifar10_ngf4_b2", "sample", steps=5, threads=1)
  # Loading a stored executable skips XLA's optimisation passes; were the cache not used
  # (not written, or the environment's cache read instead), both would compile.
  assert 0 < record["compile_warm_s"] < record["compile_cold_s"], record
  line = benchmark.format_records([{
      "name": "x", "job": "sample", "ours_steps_per_s": 1.0, "official_steps_per_s": None,
      "ratio": None, "ours_compile_s": 1.0, "ours_peak_rss_mb": 1.0,
      "official_peak_rss_mb": None, **record}]).splitlines()[-1]
  assert line.startswith("x sample: compile with an empty persistent cache")


def test_the_accelerator_check_runs_reduced_on_cpu_and_writes_its_json(tmp_path):
  import json  # pylint: disable=g-import-not-at-top
  import os  # pylint: disable=g-import-not-at-top
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  from conftest import ROOT  # pylint: disable=g-import-not-at-top
  out = tmp_path / "check.json"
  # --reduced is left unset: on CPU devices the script must choose the reduced form itself.
  run = subprocess.run([sys.executable, os.path.join(ROOT, "experiments", "accelerator_check.py"),
                        f"--json={out}", "--models=ddpm_cifar10", "--dtypes=float32"],
                       capture_output=True, text=True, cwd=ROOT, timeout=600)
  assert run.returncode == 0, run.stderr[-3000:]
  result = json.loads(out.read_text())
  assert result["reduced"] is True and result["devices"]["platform"] == "cpu"
  assert result["devices"]["device_count"] >= 1 and result["skipped"] == []
  # One row keeps the suite short; the bfloat16 programs are compiled in test_precision.py.
  assert [(r["model"], r["dtype"]) for r in result["rows"]] == [("ddpm_cifar10", "float32")]
  for row in result["rows"]:
    assert "error" not in row, row.get("error")
    for key in ("train steps/s", "sampler steps/s", "train compile (s)"):
      assert math.isfinite(row[key]) and row[key] > 0, (row["dtype"], key)
    assert row["peak_device_mb"] is None  # XLA:CPU keeps no allocator statistics
  job = result["main_job"]
  assert job["steps"] == 10 and math.isfinite(job["first_loss"]) and math.isfinite(job["last_loss"])
  assert 0 < result["seconds"] < 600
