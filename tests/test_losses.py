import jax
import jax.numpy as jnp
import numpy as np
import pytest

from score_jax import losses


def test_dsm_loss_matches_hand_computation():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(3, 2, 2, 1)).astype(np.float32)
  z = rng.normal(size=x.shape).astype(np.float32)
  labels = np.array([0, 2, 1])
  sigmas = np.array([2.0, 1.0, 0.5], np.float32)
  # A score that is easy to compute by hand: s(x, y) = -(y + 1) * x.
  score_fn = lambda xt, y: -(y + 1.0)[:, None, None, None] * xt
  got = losses.dsm_loss_per_sample(score_fn, jnp.asarray(x), jnp.asarray(labels),
                                   jnp.asarray(z), sigmas, anneal_power=2.0)
  want = []
  for b in range(3):
    sig = sigmas[labels[b]]
    xt = x[b] + sig * z[b]
    target = -(xt - x[b]) / sig**2
    s = -(labels[b] + 1.0) * xt
    want.append(0.5 * np.sum((s - target) ** 2) * sig**2)
  np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5)


def test_dsm_loss_is_zero_for_the_exact_score_of_a_point_mass():
  # Data at 0 perturbed by N(0, sigma^2): the exact score of the perturbed data is -x/sigma^2,
  # which equals the DSM target, so the loss is 0 up to rounding.
  sigmas = np.array([3.0, 1.0, 0.1], np.float32)
  x = jnp.zeros((16, 4, 4, 1))
  score_fn = lambda xt, y: -xt / jnp.asarray(sigmas)[y][:, None, None, None] ** 2
  loss = losses.dsm_loss(score_fn, x, sigmas, jax.random.PRNGKey(0))
  assert float(loss) < 1e-8
  # A wrong score gives a clearly positive loss.
  assert float(losses.dsm_loss(lambda xt, y: 0 * xt, x, sigmas, jax.random.PRNGKey(0))) > 1.0


def test_sliced_score_matching_is_the_official_formula_under_torch_autograd():
  """losses.ssm_loss_per_sample against `anneal_sliced_score_estimation_vr` written with
  torch autograd (create_graph, as the official code), on the same draws and the same
  label-conditioned two-layer score network; the loss's gradient in the weights too."""
  import torch  # pylint: disable=g-import-not-at-top
  from score_jax import losses  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  b, d, h, n_levels, p = 6, 5, 7, 3, 2
  w1, w2 = rng.normal(size=(n_levels, d, h)), rng.normal(size=(h, d)) * 0.3
  x, z = rng.normal(size=(b, d)), rng.normal(size=(b, d))
  v = rng.normal(size=(p, b, d))
  labels = np.array([0, 1, 2, 0, 2, 1])
  sigmas = np.array([1.0, 0.5, 0.1])

  def score_j(w1, w2, u, y):
    return jnp.tanh(jnp.einsum("bd,bdh->bh", u, w1[y])) @ w2

  def loss_j(w1, w2):
    return jnp.mean(losses.ssm_loss_per_sample(lambda u, y: score_j(w1, w2, u, y), x, labels,
                                               z, v, sigmas))

  with jax.enable_x64(True):
    got, grads = jax.value_and_grad(loss_j, argnums=(0, 1))(jnp.asarray(w1), jnp.asarray(w2))

  t = lambda a: torch.tensor(a, dtype=torch.float64)
  tw1, tw2 = t(w1).requires_grad_(True), t(w2).requires_grad_(True)
  lab = torch.tensor(labels)
  used = t(sigmas)[lab].view(b, 1)
  dup = (t(x) + t(z) * used).unsqueeze(0).expand(p, b, d).reshape(-1, d).requires_grad_(True)
  dup_lab = lab.unsqueeze(0).expand(p, b).reshape(-1)
  vectors = t(v).reshape(-1, d)
  grad1 = torch.tanh(torch.einsum("bd,bdh->bh", dup, tw1[dup_lab])) @ tw2
  grad2 = torch.autograd.grad(torch.sum(grad1 * vectors), dup, create_graph=True)[0]
  loss1 = (torch.sum(grad1 * grad1, dim=-1) / 2.0).view(p, -1).mean(dim=0)
  loss2 = torch.sum(vectors * grad2, dim=-1).view(p, -1).mean(dim=0)
  want = ((loss1 + loss2) * used.squeeze() ** 2).mean(dim=0)
  want.backward()
  np.testing.assert_allclose(float(got), float(want), rtol=1e-12)
  np.testing.assert_allclose(grads[0], tw1.grad.numpy(), rtol=1e-10, atol=1e-12)
  np.testing.assert_allclose(grads[1], tw2.grad.numpy(), rtol=1e-10, atol=1e-12)


def test_sliced_score_matching_trains_a_refinenet_step(tiny):
  """training.loss='ssm' compiles and steps the NCSNv2 RefineNet (second-order gradients
  through its CPU max-pool rule)."""
  from score_jax import build, sharding, state as state_lib, train  # pylint: disable=g-import-not-at-top
  c = tiny(**{"training.loss": "ssm", "training.ssm_projection": "rademacher"})
  built = build.build(c)
  mesh = sharding.data_mesh()
  st = state_lib.fresh_state(built, mesh)
  batch = jnp.asarray(np.random.default_rng(0).random((8, 28, 28, 1), np.float32))
  new, metrics = jax.jit(train.train_step_of(built))(st, batch, jax.random.PRNGKey(0))
  assert bool(metrics["finite"]) and np.isfinite(float(metrics["loss"]))
  with pytest.raises(ValueError, match="training.loss='ssm' trains NCSN"):
    from test_spine import tiny_ddpm  # pylint: disable=g-import-not-at-top
    build.build(tiny_ddpm(**{"training.loss": "ssm"}))
