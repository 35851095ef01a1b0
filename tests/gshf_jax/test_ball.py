"""Projected Newton over a ball against SciPy and closed forms, including degenerate curvature."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.optimize import NonlinearConstraint, minimize

from gshf_jax.ball import ball_quadratic_minimizer, minimize_in_ball


def scipy_ball(fun, d, bound):
  res = minimize(lambda x: float(fun(jnp.asarray(x))), np.zeros(d), jac=lambda x: np.asarray(jax.grad(fun)(jnp.asarray(x))),
                 method="trust-constr", constraints=[NonlinearConstraint(lambda x: x @ x, -np.inf, bound ** 2)],
                 options={"gtol": 1e-12, "xtol": 1e-12})
  return res.x, res.fun


@pytest.mark.parametrize("bound", [0.3, 10.0])
def test_log_sum_exp_objective_matches_scipy(bound):
  rng = np.random.default_rng(0)
  a, b = jnp.asarray(rng.normal(size=(7, 4))), jnp.asarray(rng.normal(size=7))
  fun = lambda x: jax.nn.logsumexp(a @ x + b) + 0.05 * jnp.sum(x ** 2) - x[0]
  result = minimize_in_ball(fun, jnp.zeros(4), bound)
  x_ref, f_ref = scipy_ball(fun, 4, bound)
  assert bool(result.converged) and float(result.value) <= f_ref + 1e-10
  np.testing.assert_allclose(result.x, x_ref, atol=1e-5)


def test_linear_objective_hits_the_boundary_against_the_gradient():
  """Zero curvature everywhere (the hard case): the minimizer is -B g / ||g||."""
  g = jnp.array([0.3, -1.2, 0.4])
  result = minimize_in_ball(lambda x: g @ x, jnp.zeros(3), 2.0)
  assert bool(result.converged)
  np.testing.assert_allclose(result.x, -2.0 * g / jnp.linalg.norm(g), atol=1e-10)


def test_trust_region_subproblem_with_flat_directions():
  # H is singular; b has a component along the flat direction, so the solution is on the sphere.
  hess = jnp.diag(jnp.array([0.0, 1.0, 4.0]))
  b = jnp.array([0.5, -1.0, 2.0])
  z = ball_quadratic_minimizer(hess, b, 1.0)
  x_ref, _ = scipy_ball(lambda x: 0.5 * x @ hess @ x + b @ x, 3, 1.0)
  np.testing.assert_allclose(z, x_ref, atol=1e-6)
  # Interior solution when the unconstrained minimizer is feasible (no flat component in b).
  np.testing.assert_allclose(ball_quadratic_minimizer(hess, jnp.array([0.0, -0.5, 1.0]), 5.0), [0.0, 0.5, -0.25],
                             atol=1e-12)
