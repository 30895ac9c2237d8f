"""Sample quality against network calls: every sampler on the DDPM and EDM MNIST models.

  python experiments/sampler_nfe.py --workdir=/tmp/nfe                 # trains both, ~1 h
  python experiments/sampler_nfe.py --workdir=/tmp/nfe --samples=108 --nfe=5,10
  python experiments/sampler_nfe.py --ddpm_workdir=W1 --edm_workdir=W2  # takes trained ones

Trains `configs/ddpm_mnist.py` and `configs/edm_mnist.py` (as the main job does; skipped
when the workdir already holds the last checkpoint), then samples each network's EMA
weights with every sampler of `samplers.SAMPLERS` (and EDM's Heun, `edm`) at each target
number of network calls: steps are chosen so that a sampler makes at most that many calls
(two-call samplers take (NFE + 1) / 2 steps), `ode` reports the calls its tolerance took,
and DDPM's ancestral sampler runs its full 1,000 steps once as the reference. Every run
draws the same `--samples` starting points (sample ids 0..N-1) and is scored by the MNIST
Frechet distance the main job ends with (score_jax.eval.mnist_features, against the
bundled subset's own statistics). Writes `<workdir>/sampler_nfe.json` and the plot
`docs/sampler_nfe.png` (`--plot`), one line per sampler.
"""

import json
import os
import sys
import time

import jax
import numpy as np
from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from configs import ddpm_mnist, edm_mnist  # pylint: disable=g-import-not-at-top,wrong-import-position
from experiments import mnist_common  # pylint: disable=g-import-not-at-top,wrong-import-position
from score_jax import build, checkpoints, generate, samplers, sharding  # pylint: disable=g-import-not-at-top,wrong-import-position

flags.DEFINE_string("workdir", "/tmp/sampler_nfe", "Where the two models are trained.")
flags.DEFINE_string("ddpm_workdir", "", "A trained ddpm_mnist workdir to take instead.")
flags.DEFINE_string("edm_workdir", "", "A trained edm_mnist workdir to take instead.")
flags.DEFINE_string("nfe", "5,10,20,35", "Target network calls.")
flags.DEFINE_integer("samples", 256, "Samples per point.")
flags.DEFINE_string("plot", "docs/sampler_nfe.png", "Where the plot goes ('' for none).")
flags.DEFINE_bool("ancestral", True, "Also DDPM's 1,000-step ancestral sampler.")
flags.DEFINE_string("models", "ddpm,edm", "Which of the two models.")
flags.DEFINE_string("samplers", "", "A comma list of the samplers below; '' for all.")
flags.DEFINE_string("replot", "", "Only draw --plot again from this sampler_nfe.json.")
FLAGS = flags.FLAGS

# (sampler, options, calls per step): the last step into sigma = 0 takes one call.
SAMPLERS = [
    ("euler", {}, 1), ("heun", {}, 2), ("dpm_2", {}, 2), ("lms", {}, 1),
    ("ddim", {}, 1), ("dpm_solver", {"order": 2}, 2), ("dpmpp_2m", {}, 1),
    ("dpmpp_3m", {}, 1), ("unipc", {"order": 3}, 1), ("euler_ancestral", {}, 1),
    ("dpmpp_2m_sde", {}, 1), ("dpmpp_sde", {}, 2), ("pc", {}, 2), ("edm", {}, 2),
]
ODE_TOLERANCES = (1e-2, 1e-3)


def steps_for(nfe: int, per_step: int) -> int:
  return max(1, (nfe + per_step - 1) // per_step) if per_step == 1 else max(1, (nfe + 1) // 2)


def run_one(built, params, name: str, options: dict, steps: int, n: int, key):
  """(samples [n, 28, 28, 1] in [0, 1], network calls) of one sampler setting."""
  den = generate.sampling_denoiser(built.method, built.sampler, params)
  lo, hi = max(0.002, den.sigma_min), min(80.0, den.sigma_max)
  sigmas = samplers.schedules.karras(steps, lo, hi)
  z = jax.random.normal(jax.random.PRNGKey(0), (n,) + built.image_shape)
  if name == "edm":
    fn = lambda z: samplers.edm_sampler(den.fn, z, key, steps, lo, hi,
                                        round_sigma=den.round_sigma)
    calls = 2 * steps - 1
  elif name == "ode":  # adaptive: only the ends of [sigma_max, sigma_min, 0] matter
    sigmas = samplers.schedules.karras(2, lo, hi)
    fn = lambda z: samplers.SAMPLERS["ode"](den.fn, z * sigmas[0], sigmas, return_nfe=True,
                                            **options)
    calls = None
  else:
    fn = lambda z: samplers.SAMPLERS[name](den.fn, z * sigmas[0], sigmas, key, **options)
    calls = None
  out = jax.jit(fn)(z)
  if name == "ode":
    out, calls = out
    calls = int(calls)
  elif calls is None:
    calls = count_calls(name, options, sigmas)
  return np.asarray((out + 1.0) / 2.0), calls


def count_calls(name: str, options: dict, sigmas) -> int:
  per = dict((s, p) for s, _, p in SAMPLERS)[name]
  steps = len(sigmas) - 1
  return steps if per == 1 else 2 * steps - (1 if sigmas[-1] == 0 and name != "pc" else 0)


def evaluate_model(label: str, built, workdir: str, targets, n: int, fd) -> list:
  ckpt, target = checkpoints.open_trained(workdir, built, sharding.data_mesh())
  params = ckpt.restore_latest(target).ema_params
  key = jax.random.PRNGKey(1)
  rows = []
  chosen = [v for v in FLAGS.samplers.split(",") if v]
  for name, options, per in SAMPLERS:
    if chosen and name not in chosen:
      continue
    for nfe in targets:
      t0 = time.time()
      x, calls = run_one(built, params, name, options, steps_for(nfe, per), n, key)
      rows.append(dict(model=label, sampler=name, target_nfe=nfe, nfe=calls, fd=fd(x),
                       seconds=time.time() - t0))
      print(json.dumps(rows[-1]), flush=True)
  for tol in ODE_TOLERANCES if not chosen or "ode" in chosen else ():
    t0 = time.time()
    x, calls = run_one(built, params, "ode", dict(rtol=tol, atol=tol), 1, n, key)
    rows.append(dict(model=label, sampler="ode", target_nfe=None, nfe=calls, fd=fd(x),
                     rtol=tol, seconds=time.time() - t0))
    print(json.dumps(rows[-1]), flush=True)
  if label == "ddpm" and FLAGS.ancestral:
    t0 = time.time()
    x = jax.jit(generate.sample_fn_of(built, batch_size=n))(params, key)
    rows.append(dict(model=label, sampler="ancestral", target_nfe=1000, nfe=1000,
                     fd=fd(np.asarray(x)), seconds=time.time() - t0))
    print(json.dumps(rows[-1]), flush=True)
  return rows


def _equal(a, b) -> bool:
  """The same calls and FDs within 1e-3: one sampler computing another's steps (in float32,
  by other formulas)."""
  return ([n for n, _ in a] == [n for n, _ in b]
          and all(abs(x - y) <= 1e-3 * abs(y) for (_, x), (_, y) in zip(a, b)))


def plot(rows, path: str):
  from matplotlib.figure import Figure  # pylint: disable=g-import-not-at-top
  models = sorted({r["model"] for r in rows})
  fig = Figure(figsize=(5.5 * len(models) + 2, 4.5))
  names = list(dict.fromkeys(r["sampler"] for r in rows))
  # 16 lines: ten colours alone would give two samplers one look.
  looks = {n: (f"C{i % 10}", "os^vDP*Xh<>"[i % 11], "-" if i < 10 else "--")
           for i, n in enumerate(names)}
  for ax, model in zip(fig.subplots(1, len(models), squeeze=False)[0], models):
    mine = [r for r in rows if r["model"] == model]
    curves = {n: sorted((r["nfe"], r["fd"]) for r in mine if r["sampler"] == n)
              for n in names if any(r["sampler"] == n for r in mine)}
    for name, pts in curves.items():
      # A sampler that is another one's equal on this model (dpm_solver order 2 is dpm_2 on
      # the VE flow; edm without churn is heun) is named beside it, not drawn over it.
      same = [m for m in curves if m != name and _equal(curves[m], pts)]
      if same and names.index(same[0]) < names.index(name):
        continue
      colour, marker, line = looks[name]
      ax.plot(*zip(*pts), color=colour, marker=marker, markersize=4,
              linestyle="none" if len(pts) == 1 else line,
              label=" = ".join([name] + same))
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("network calls")
    ax.set_ylabel("MNIST Frechet distance")
    ax.set_title(f"{model}_mnist")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
  fig.tight_layout()
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  fig.savefig(path, dpi=110)


def main(argv):
  del argv
  if FLAGS.replot:
    with open(FLAGS.replot) as f:
      plot(json.load(f)["rows"], FLAGS.plot)
    return
  targets = [int(v) for v in FLAGS.nfe.split(",")]
  fd = mnist_common.mnist_frechet(build.build(ddpm_mnist.get_config()).data)
  rows = []
  for label, module, wd in (("ddpm", ddpm_mnist, FLAGS.ddpm_workdir),
                            ("edm", edm_mnist, FLAGS.edm_workdir)):
    if label not in FLAGS.models.split(","):
      continue
    wd = wd or os.path.join(FLAGS.workdir, label)
    built = mnist_common.trained(module.get_config(), wd)
    rows += evaluate_model(label, built, wd, targets, FLAGS.samples, fd)
    os.makedirs(FLAGS.workdir, exist_ok=True)
    with open(os.path.join(FLAGS.workdir, "sampler_nfe.json"), "w") as f:
      json.dump(dict(samples=FLAGS.samples, targets=targets, rows=rows), f, indent=1)
  if FLAGS.plot:
    plot(rows, FLAGS.plot)


if __name__ == "__main__":
  app.run(main)
