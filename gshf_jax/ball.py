"""Minimizing a smooth convex function over a Euclidean ball by projected Newton.

Used for the constrained MLE of Eq. (3) (`preference.bt_mle`) and for the convex dual of Eq. (5)
(bandit_sim's Option I); jittable and vmappable.
"""

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike


def project_to_ball(v: ArrayLike, bound: ArrayLike) -> jax.Array:
  """Euclidean projection of v [d] onto {||x|| <= bound}."""
  norm = jnp.linalg.norm(v)
  return v * jnp.minimum(1.0, bound / jnp.maximum(norm, jnp.finfo(v.dtype).tiny))


def ball_quadratic_minimizer(hess: ArrayLike, b: ArrayLike, bound: ArrayLike) -> jax.Array:
  """argmin_{||z|| <= bound} 0.5 z^T H z + b^T z for H >= 0 (the trust-region subproblem).

  Eigen-decomposition of H; the multiplier mu >= 0 of the ball solves ||(H + mu I)^{-1} b|| = bound,
  found by Newton's method on 1/||z(mu)|| - 1/bound (concave and increasing, so the iterates rise
  monotonically to the root; Moré & Sorensen 1983). Directions with eigenvalue ~ 0 get no component
  when b has none there (the minimal-norm solution); otherwise mu > 0 handles them.
  """
  dtype = hess.dtype
  evals, evecs = jnp.linalg.eigh(hess)
  flat = evals <= jnp.maximum(evals[-1], 0.0) * hess.shape[0] * 10 * jnp.finfo(dtype).eps
  bq = evecs.T @ b
  # Rounding noise in b along flat directions is dropped; a real component there (norm well above the
  # noise) is kept, and then mu > 0 below.
  noise = 10 * jnp.finfo(dtype).eps * jnp.maximum(jnp.linalg.norm(b), jnp.finfo(dtype).tiny)
  bq = jnp.where(flat & (jnp.abs(bq) <= noise), 0.0, bq)
  evals = jnp.where(flat, jnp.where(bq == 0.0, 1.0, 0.0), evals)

  def coords(mu):
    return jnp.where(bq == 0.0, 0.0, -bq / jnp.maximum(evals + mu, jnp.finfo(dtype).tiny))

  def newton(_, mu):
    c = coords(mu)
    norm = jnp.maximum(jnp.linalg.norm(c), jnp.finfo(dtype).tiny)
    phi = 1.0 / norm - 1.0 / bound  # < 0 while z(mu) lies outside the ball
    dphi_dmu = jnp.sum(c ** 2 / jnp.maximum(evals + mu, jnp.finfo(dtype).tiny)) / norm ** 3
    return jnp.where(phi < 0, mu - phi / dphi_dmu, mu)

  # The root is >= |b_flat| / bound; starting there (left of the root) keeps Newton monotone.
  mu0 = jnp.linalg.norm(jnp.where(flat, bq, 0.0)) / bound
  mu = jax.lax.fori_loop(0, 60, newton, mu0)
  return project_to_ball(evecs @ coords(mu), bound)


class BallResult(NamedTuple):
  """What `minimize_in_ball` returns."""
  x: jax.Array  # [d] the minimizer found
  value: jax.Array  # f(x)
  num_iterations: jax.Array  # Newton steps taken
  stationarity: jax.Array  # ||x - P_B(x - grad f(x))||; 0 exactly at the constrained minimizer
  converged: jax.Array  # stationarity <= tol


def default_tol(dtype) -> float:
  """1e-10 in float64, 1e-5 in float32 and narrower types."""
  return 1e-10 if jnp.finfo(dtype).bits >= 64 else 1e-5


def minimize_in_ball(fun: Callable, x0: ArrayLike, bound: ArrayLike, *, tol: float | None = None,
    max_iter: int = 100) -> Any:
  """argmin_{||x|| <= bound} fun(x) for smooth convex `fun`, by projected Newton.

  Each step minimizes the second-order model of fun over the ball exactly (ball_quadratic_minimizer)
  and backtracks along the segment to that point (Armijo, with slack at the resolution of fun so that
  the full step is taken near the optimum, where the predicted decrease falls below rounding). Stops
  when the projected-gradient stationarity ||x - P_B(x - grad)|| <= tol (default 1e-10 in float64, 1e-5
  in float32), or after max_iter steps.

  Args:
    fun: scalar convex function of x [d] (jax-differentiable).
    x0: [d] feasible start.
    bound: radius > 0.
    tol: stationarity tolerance.
    max_iter: maximum Newton steps (static).

  Returns:
    BallResult.
  """
  dtype = x0.dtype
  tol = default_tol(dtype) if tol is None else tol
  value_and_grad = jax.value_and_grad(fun)
  hessian = jax.hessian(fun)

  def stationarity(x, grad):
    return jnp.linalg.norm(x - project_to_ball(x - grad, bound))

  def step(state):
    x, f0, grad, it, _ = state
    hess = hessian(x)
    direction = ball_quadratic_minimizer(hess, grad - hess @ x, bound) - x
    slope = grad @ direction
    slack = 16 * jnp.finfo(dtype).eps * (1.0 + jnp.abs(f0))

    def not_sufficient(t):
      return (fun(x + t * direction) > f0 + 1e-4 * t * slope + slack) & (t > 1e-12)

    t = jax.lax.while_loop(not_sufficient, lambda t: 0.5 * t, jnp.ones((), dtype))
    new = x + t * direction
    new_f, new_grad = value_and_grad(new)
    return new, new_f, new_grad, it + 1, stationarity(new, new_grad)

  def keep_going(state):
    return (state[4] > tol) & (state[3] < max_iter)

  f0, g0 = value_and_grad(x0)
  x, f, _, it, stat = jax.lax.while_loop(keep_going, step, (x0, f0, g0, jnp.zeros((), jnp.int32),
                                                            stationarity(x0, g0)))
  return BallResult(x, f, it, stat, stat <= tol)
