"""Covariance, elliptical norms and the confidence radius against NumPy and the stated formulas."""

import jax.numpy as jnp
import numpy as np
import pytest

from gshf_jax import confidence_radius, covariance, elliptical_norm, gamma


def test_covariance_matches_outer_product_sum():
  rng = np.random.default_rng(0)
  dphi = rng.normal(size=(30, 4))
  expected = 0.7 * np.eye(4) + sum(np.outer(v, v) for v in dphi)
  np.testing.assert_allclose(covariance(dphi, 0.7), expected, rtol=1e-12)
  mask = rng.random(30) < 0.5
  np.testing.assert_allclose(covariance(dphi, 0.7, mask, scale=0.1),
                             0.7 * np.eye(4) + 0.1 * dphi[mask].T @ dphi[mask], rtol=1e-12)


def test_elliptical_norm_matches_solve_and_batches():
  rng = np.random.default_rng(1)
  a = rng.normal(size=(5, 5))
  cov = a @ a.T + 0.5 * np.eye(5)
  v = rng.normal(size=(3, 2, 5))
  expected = np.sqrt(np.einsum("...i,...i->...", v, np.linalg.solve(cov, v[..., None])[..., 0]))
  got = elliptical_norm(v, cov)
  assert got.shape == (3, 2)
  np.testing.assert_allclose(got, expected, rtol=1e-12)
  assert elliptical_norm(jnp.asarray(v[0, 0], jnp.float32), jnp.asarray(cov, jnp.float32)).dtype == jnp.float32


def test_confidence_radius_formula_and_normalization():
  d, delta, b, lam = 5, 0.05, 2.0, 0.3
  expected = np.sqrt((d + np.log(1 / delta)) / float(gamma(b)) ** 2 + lam * b ** 2)
  assert float(confidence_radius(d, delta, b, lam)) == pytest.approx(expected, rel=1e-12)
  # Normalized covariance Sigma_D / n with lam: the same ball as Sigma_D with n * lam, scaled by 1/sqrt(n).
  n = 400
  assert float(confidence_radius(d, delta, b, lam, n)) == pytest.approx(
      float(confidence_radius(d, delta, b, n * lam)) / np.sqrt(n), rel=1e-12)


def test_elliptical_norm_at_zero_is_zero_with_zero_gradient():
  import jax
  cov = jnp.array([[2.0, 0.3], [0.3, 1.0]])
  assert float(elliptical_norm(jnp.zeros(2), cov)) == 0.0
  grad = jax.grad(lambda v: elliptical_norm(v, cov))(jnp.zeros(2))
  np.testing.assert_array_equal(grad, [0.0, 0.0])
  v = jnp.array([0.4, -1.0])  # away from 0 the gradient is Sigma^-1 v / ||v||
  np.testing.assert_allclose(jax.grad(lambda u: elliptical_norm(u, cov))(v),
                             np.linalg.solve(cov, v) / float(elliptical_norm(v, cov)), rtol=1e-12)
