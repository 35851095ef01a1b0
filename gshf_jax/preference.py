"""Bradley-Terry preference model with linear rewards (Eq. (1), Eq. (3), Assumption 2.1).

Data are differences of features `dphi [n, d] = phi(x, a1) - phi(x, a2)` and labels `y [n]`, y = 1 when
a1 is preferred (soft labels in [0, 1] are accepted). An optional `mask [n]` (1 keep, 0 drop) lets
datasets of different sizes share one compiled shape.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp

from gshf_jax import _checks


def gamma(bound):
  """Assumption 2.1: gamma = 1 / (2 + exp(-B) + exp(B)), the smallest sigmoid'(z) over |z| <= B."""
  _checks.check_positive("bound", bound)
  return 1.0 / (2.0 + jnp.exp(-bound) + jnp.exp(bound))


def _check_data(dphi, y, mask):
  _checks.check_shape("dphi", dphi, (None, None))
  n = dphi.shape[0]
  _checks.check_shape("y", y, (n,))
  if mask is not None:
    _checks.check_shape("mask", mask, (n,))
  _checks.check_in_range("y", y, 0.0, 1.0)


def _weights(y, mask, dtype):
  return jnp.ones(y.shape, dtype) if mask is None else jnp.asarray(mask, dtype)


def bt_log_likelihood(theta, dphi, y, mask=None):
  """Eq. (3): sum_i y_i log sigmoid(<theta, dphi_i>) + (1 - y_i) log sigmoid(-<theta, dphi_i>).

  Args:
    theta: [d] reward parameter.
    dphi: [n, d] feature differences phi(x, a1) - phi(x, a2).
    y: [n] labels, 1 when a1 is preferred.
    mask: optional [n], 0 drops a row.

  Returns:
    scalar log-likelihood (a sum, not a mean, as in Eq. (3)).
  """
  _check_data(dphi, y, mask)
  _checks.check_shape("theta", theta, (dphi.shape[1],))
  z = jnp.asarray(dphi) @ theta
  y = jnp.asarray(y, z.dtype)
  rows = y * jax.nn.log_sigmoid(z) + (1.0 - y) * jax.nn.log_sigmoid(-z)
  return jnp.sum(_weights(y, mask, z.dtype) * rows)


class BTMLEResult(NamedTuple):
  """What `bt_mle(..., return_info=True)` returns."""
  theta: jax.Array  # [d] the constrained maximizer
  num_iterations: jax.Array  # Newton steps taken
  stationarity: jax.Array  # ||theta - P_B(theta + grad)|| of the mean log-likelihood; 0 iff optimal
  converged: jax.Array  # stationarity <= tol


def project_to_ball(v, bound):
  """Euclidean projection of v [d] onto {||theta|| <= bound}."""
  norm = jnp.linalg.norm(v)
  return v * jnp.minimum(1.0, bound / jnp.maximum(norm, jnp.finfo(v.dtype).tiny))


def _ball_quadratic_minimizer(hess, b, bound):
  """argmin_{||z|| <= bound} 0.5 z^T H z + b^T z for H >= 0 (the trust-region subproblem).

  Eigen-decomposition of H; the multiplier mu >= 0 of the ball solves ||(H + mu I)^{-1} b|| = bound,
  found by Newton's method on 1/||z(mu)|| - 1/bound (concave and increasing, so the iterates rise
  monotonically to the root; Moré & Sorensen 1983). Directions with eigenvalue ~ 0 carry no curvature
  and, as b lies in the range of H for the BT Hessian, get no component: the minimal-norm solution.
  """
  dtype = hess.dtype
  evals, evecs = jnp.linalg.eigh(hess)
  flat = evals <= evals[-1] * hess.shape[0] * 10 * jnp.finfo(dtype).eps
  bq = jnp.where(flat, 0.0, evecs.T @ b)
  evals = jnp.where(flat, 1.0, evals)  # bq = 0 there, so any positive value gives the same z

  def coords(mu):
    return -bq / (evals + mu)

  def newton(_, mu):
    c = coords(mu)
    norm = jnp.maximum(jnp.linalg.norm(c), jnp.finfo(dtype).tiny)
    phi = 1.0 / norm - 1.0 / bound  # < 0 while z(mu) lies outside the ball
    dphi_dmu = jnp.sum(c ** 2 / (evals + mu)) / norm ** 3
    return jnp.where(phi < 0, mu - phi / dphi_dmu, mu)

  mu = jax.lax.fori_loop(0, 60, newton, jnp.zeros((), dtype))
  return project_to_ball(evecs @ coords(mu), bound)


def default_mle_tol(dtype):
  """Default stationarity tolerance of bt_mle: 1e-10 in float64, 1e-5 in float32 and narrower types."""
  return 1e-10 if jnp.finfo(dtype).bits >= 64 else 1e-5


def bt_mle(dphi, y, bound, mask=None, *, tol=None, max_iter=100, return_info=False):
  """theta_MLE = argmax_{||theta|| <= bound} of Eq. (3) (Section 2.2), by projected Newton.

  Each step minimizes the second-order model of the mean negative log-likelihood over the ball exactly
  (a trust-region subproblem, solved by eigen-decomposition) and backtracks along the segment to it
  (Armijo). Iterations stop when the projected-gradient stationarity ||theta - P_B(theta + g)||, g the
  gradient of the *mean* log-likelihood, is <= tol (default 1e-10 in float64, 1e-5 in float32); it is
  zero exactly at the constrained maximizer, inside the ball or on it. When the data do not span R^d the
  maximizer is not unique; this returns the one with no component outside their span.

  Args:
    dphi: [n, d] feature differences.
    y: [n] labels in [0, 1].
    bound: B > 0, the radius of Theta(B).
    mask: optional [n], 0 drops a row.
    tol: stationarity tolerance (see above).
    max_iter: maximum Newton steps (static).
    return_info: also return iterations, stationarity and a converged flag.

  Returns:
    [d] theta, or a BTMLEResult when return_info.
  """
  _check_data(dphi, y, mask)
  _checks.check_positive("bound", bound)
  _checks.check_positive_int("max_iter", max_iter)
  dphi = jnp.asarray(dphi)
  if not jnp.issubdtype(dphi.dtype, jnp.floating):
    dphi = dphi.astype(jnp.result_type(float))
  dtype = dphi.dtype
  y = jnp.asarray(y, dtype)
  w = _weights(y, mask, dtype)
  w = w / jnp.maximum(jnp.sum(w), 1.0)
  tol = default_mle_tol(dtype) if tol is None else tol
  bound = jnp.asarray(bound, dtype)

  def neg_ll(theta):
    z = dphi @ theta
    return -jnp.sum(w * (y * jax.nn.log_sigmoid(z) + (1.0 - y) * jax.nn.log_sigmoid(-z)))

  def grad_hess(theta):
    s = jax.nn.sigmoid(dphi @ theta)
    grad = dphi.T @ (w * (s - y))
    hess = (dphi * (w * s * (1.0 - s))[:, None]).T @ dphi
    return grad, hess

  def stationarity(theta, grad):
    return jnp.linalg.norm(theta - project_to_ball(theta - grad, bound))

  def step(state):
    theta, it, _ = state
    grad, hess = grad_hess(theta)
    target = _ball_quadratic_minimizer(hess, grad - hess @ theta, bound)
    direction = target - theta
    slope = grad @ direction
    f0 = neg_ll(theta)

    def shrink(t):
      return t * 0.5

    # Armijo, with slack at the resolution of f so that the full Newton step is taken near the optimum,
    # where the predicted decrease falls below rounding error.
    slack = 16 * jnp.finfo(dtype).eps * (1.0 + jnp.abs(f0))

    def not_sufficient(t):
      return (neg_ll(theta + t * direction) > f0 + 1e-4 * t * slope + slack) & (t > 1e-12)

    t = jax.lax.while_loop(not_sufficient, shrink, jnp.ones((), dtype))
    new_theta = theta + t * direction
    new_grad, _ = grad_hess(new_theta)
    return new_theta, it + 1, stationarity(new_theta, new_grad)

  def keep_going(state):
    _, it, stat = state
    return (stat > tol) & (it < max_iter)

  theta0 = jnp.zeros(dphi.shape[1], dtype)
  stat0 = stationarity(theta0, grad_hess(theta0)[0])
  theta, it, stat = jax.lax.while_loop(keep_going, step, (theta0, jnp.zeros((), jnp.int32), stat0))
  if return_info:
    return BTMLEResult(theta, it, stat, stat <= tol)
  return theta
