"""Bradley-Terry likelihood and constrained MLE against SciPy, KKT conditions and the 1/sqrt(n) rate."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.optimize import NonlinearConstraint, minimize

from gshf_jax import bt_log_likelihood, bt_mle, gamma


def bt_instance(rng, n, d, theta_norm=1.0):
  """Features in the unit ball, dphi = phi1 - phi2, labels drawn from the BT model (Eq. (1))."""
  phi = rng.normal(size=(2, n, d))
  phi /= np.maximum(1.0, np.linalg.norm(phi, axis=-1, keepdims=True))
  dphi = phi[0] - phi[1]
  theta = rng.normal(size=d)
  theta *= theta_norm / np.linalg.norm(theta)
  y = (rng.random(n) < 1 / (1 + np.exp(-dphi @ theta))).astype(np.float64)
  return dphi, y, theta


def plain_log_likelihood(theta, dphi, y):
  total = 0.0
  for row, label in zip(dphi, y):
    z = float(row @ theta)
    total += label * np.log(1 / (1 + np.exp(-z))) + (1 - label) * np.log(1 / (1 + np.exp(z)))
  return total


def scipy_mle(dphi, y, bound):
  n = len(y)
  f = jax.jit(lambda t: -bt_log_likelihood(t, dphi, y) / n)
  g = jax.jit(jax.grad(lambda t: -bt_log_likelihood(t, dphi, y) / n))
  ball = NonlinearConstraint(lambda t: t @ t, -np.inf, bound ** 2, jac=lambda t: 2 * t)
  res = minimize(lambda t: float(f(t)), np.zeros(dphi.shape[1]), jac=lambda t: np.asarray(g(t)),
                 method="trust-constr", constraints=[ball],
                 options={"gtol": 1e-12, "xtol": 1e-12, "maxiter": 5000})
  return res.x, res.fun


def test_log_likelihood_matches_plain_sum_and_mask():
  rng = np.random.default_rng(0)
  dphi, y, theta = bt_instance(rng, 50, 3)
  assert float(bt_log_likelihood(theta, dphi, y)) == pytest.approx(plain_log_likelihood(theta, dphi, y), rel=1e-12)
  mask = rng.random(50) < 0.6
  assert float(bt_log_likelihood(theta, dphi, y, mask)) == pytest.approx(
      plain_log_likelihood(theta, dphi[mask], y[mask]), rel=1e-12)


def test_gamma_closed_form():
  for b in (0.5, 1.0, 4.0):
    assert float(gamma(b)) == pytest.approx(1 / (2 + np.exp(-b) + np.exp(b)), rel=1e-14)
    # gamma = min over |z| <= B of sigmoid'(z) = sigmoid(B)(1 - sigmoid(B)).
    s = 1 / (1 + np.exp(-b))
    assert float(gamma(b)) == pytest.approx(s * (1 - s), rel=1e-12)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("where", ["inside", "boundary"])
def test_mle_matches_scipy_constrained_optimizer(seed, where):
  rng = np.random.default_rng(seed)
  dphi, y, _ = bt_instance(rng, 300, 4, theta_norm=1.5)
  bound = 20.0 if where == "inside" else 0.5
  info = bt_mle(dphi, y, bound, return_info=True)
  ref_theta, ref_obj = scipy_mle(dphi, y, bound)
  assert bool(info.converged) and float(info.stationarity) <= 1e-10
  ours = -float(bt_log_likelihood(info.theta, dphi, y)) / len(y)
  assert ours <= ref_obj + 1e-10  # never worse than SciPy
  np.testing.assert_allclose(info.theta, ref_theta, atol=1e-5)
  norm = np.linalg.norm(info.theta)
  if where == "inside":
    assert norm < bound - 1.0
  else:
    assert norm == pytest.approx(bound, rel=1e-12)


def test_mle_on_separable_data_lies_on_the_ball_and_satisfies_kkt():
  """The unconstrained optimum is at infinity; the constrained one is on the sphere with
  grad log-likelihood = mu * theta, mu >= 0."""
  rng = np.random.default_rng(3)
  dphi, _, theta = bt_instance(rng, 200, 3)
  y = (dphi @ theta > 0).astype(np.float64)
  info = bt_mle(dphi, y, 3.0, return_info=True)
  assert bool(info.converged)
  assert np.linalg.norm(info.theta) == pytest.approx(3.0, rel=1e-12)
  grad = np.asarray(jax.grad(bt_log_likelihood)(info.theta, dphi, y))
  mu = grad @ info.theta / 9.0
  assert mu > 0
  np.testing.assert_allclose(grad, mu * info.theta, atol=1e-8 * np.linalg.norm(grad))


def test_mle_mask_equals_dropping_rows_and_rank_deficient_data():
  rng = np.random.default_rng(4)
  dphi, y, _ = bt_instance(rng, 120, 3)
  mask = rng.random(120) < 0.5
  mle = jax.jit(bt_mle, static_argnames="return_info")  # compiled whole, not operation by operation
  np.testing.assert_allclose(mle(dphi, y, 5.0, mask), mle(dphi[mask], y[mask], 5.0), atol=1e-9)
  # Data spanning only the first two axes: the third coordinate of the MLE is 0 (minimal norm).
  flat = dphi.copy()
  flat[:, 2] = 0.0
  info = mle(flat, y, 5.0, return_info=True)
  assert bool(info.converged) and abs(float(info.theta[2])) < 1e-12


def test_mle_float32_converges():
  rng = np.random.default_rng(5)
  dphi, y, _ = bt_instance(rng, 400, 4, theta_norm=1.5)
  mle = jax.jit(bt_mle, static_argnames="return_info")  # compiled whole, not operation by operation
  info = mle(jnp.asarray(dphi, jnp.float32), jnp.asarray(y, jnp.float32), 1.0, return_info=True)
  assert info.theta.dtype == jnp.float32 and bool(info.converged)
  np.testing.assert_allclose(info.theta, mle(dphi, y, 1.0), atol=1e-4)


def test_mle_error_shrinks_like_inverse_sqrt_n():
  """Mean ||theta_MLE - theta*|| over 64 seeds at n = 250..4000: log-log slope close to -1/2."""
  d, seeds, sizes = 3, 64, [250, 1000, 4000]
  theta_star = jnp.array([0.8, -0.5, 0.3])

  def error(key, ns):
    k1, k2 = jax.random.split(key)
    phi = jax.random.normal(k1, (2, max(sizes), d))
    phi = phi / jnp.maximum(1.0, jnp.linalg.norm(phi, axis=-1, keepdims=True))
    dphi = phi[0] - phi[1]
    y = jax.random.bernoulli(k2, jax.nn.sigmoid(dphi @ theta_star)).astype(jnp.float64)
    masks = jnp.arange(max(sizes))[None, :] < ns[:, None]
    return jax.vmap(lambda mask: jnp.linalg.norm(bt_mle(dphi, y, 4.0, mask) - theta_star))(masks)

  keys = jax.random.split(jax.random.key(0), seeds)
  # one compilation: each n is the first n rows of a dataset of max(sizes) (a mask), per seed
  errors = list(np.asarray(jax.jit(jax.vmap(error, in_axes=(0, None)))(keys, jnp.asarray(sizes)).mean(0)))
  slope = np.polyfit(np.log(sizes), np.log(errors), 1)[0]
  assert -0.6 < slope < -0.4, (slope, errors)
