"""Bradley-Terry preference model with linear rewards (Eq. (1), Eq. (3), Assumption 2.1).

Data are differences of features `dphi [n, d] = phi(x, a1) - phi(x, a2)` and labels `y [n]`, y = 1 when
a1 is preferred (soft labels in [0, 1] are accepted). An optional `mask [n]` (1 keep, 0 drop) lets
datasets of different sizes share one compiled shape.
"""

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from gshf_jax import _checks, ball


def gamma(bound: ArrayLike) -> jax.Array:
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


def bt_log_likelihood(theta: ArrayLike, dphi: ArrayLike, y: ArrayLike, mask: ArrayLike | None = None) -> jax.Array:
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


def bt_mle(dphi: ArrayLike, y: ArrayLike, bound: ArrayLike, mask: ArrayLike | None = None, *,
    tol: float | None = None, max_iter: int = 100, return_info: bool = False) -> Any:
  """theta_MLE = argmax_{||theta|| <= bound} of Eq. (3) (Section 2.2), by projected Newton.

  gshf_jax.ball.minimize_in_ball on the mean negative log-likelihood: each step minimizes its
  second-order model over the ball exactly (a trust-region subproblem, solved by eigen-decomposition)
  and backtracks along the segment to it (Armijo). Iterations stop when the projected-gradient stationarity ||theta - P_B(theta + g)||, g the
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
    [d] theta, or a BTMLEResult when return_info. Non-finite data raise ValueError when concrete and
    make theta NaN under jit.
  """
  _check_data(dphi, y, mask)
  _checks.check_finite("dphi", dphi)
  _checks.check_no_nan("y", y)
  _checks.check_positive("bound", bound)
  _checks.check_positive_int("max_iter", max_iter)
  dphi = jnp.asarray(dphi)
  if not jnp.issubdtype(dphi.dtype, jnp.floating):
    dphi = dphi.astype(jnp.result_type(float))
  dtype = dphi.dtype
  y = jnp.asarray(y, dtype)
  w = _weights(y, mask, dtype)
  w = w / jnp.maximum(jnp.sum(w), 1.0)
  bound = jnp.asarray(bound, dtype)

  def neg_mean_ll(theta):
    z = dphi @ theta
    return -jnp.sum(w * (y * jax.nn.log_sigmoid(z) + (1.0 - y) * jax.nn.log_sigmoid(-z)))

  result = ball.minimize_in_ball(neg_mean_ll, jnp.zeros(dphi.shape[1], dtype), bound, tol=tol,
                                 max_iter=max_iter)
  # Under jit a NaN in the (unmasked) data cannot raise; it makes theta NaN, never a plausible theta = 0.
  x = jnp.where(jnp.any(jnp.isnan(dphi)) | jnp.any(jnp.isnan(y)), jnp.nan, result.x)
  if return_info:
    return BTMLEResult(x, result.num_iterations, result.stationarity, result.converged)
  return x
