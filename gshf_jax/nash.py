"""The KL-regularized two-player preference game of Nash learning from human feedback (NLHF).

For a general preference pref[a1, a2] = P(a1 beats a2) with pref + pref^T = 1, the game is

  J(pi1, pi2) = E_x[ pi1^T P pi2 - eta KL(pi1 || pi0) + eta KL(pi2 || pi0) ],

pi1 maximizes, pi2 minimizes. It is symmetric and has a unique Nash equilibrium (pi*, pi*),
pi* ∝ pi0 exp(P pi* / eta) (Ye et al. 2024, "Online Iterative RLHF with General Preference Model"; Munos et al.
2023). Per context: `ref_logp [..., K]`, `pref [..., K, K]`; the context average E_x is uniform over the
leading axes, or weighted by `context_probs [X]` over the first axis when given.
"""

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from gshf_jax import _checks
from gshf_jax.gibbs import kl


def _check_game(ref_logp, pref, eta, *logps):
  _checks.check_positive("eta", eta)
  shape = np.shape(pref)
  if len(shape) < 2 or shape[-1] != shape[-2]:
    raise ValueError(f"pref must have shape [..., K, K], got {list(shape)}")
  names = ["logp"] if len(logps) == 1 else [f"logp{i + 1}" for i in range(len(logps))]
  for name, array in zip(["ref_logp", *names], [ref_logp, *logps]):
    if np.ndim(array) == 0 or np.shape(array)[-1] != shape[-1]:
      raise ValueError(f"{name} must have shape [..., {shape[-1]}] to match pref {list(shape)}, "
                       f"got {list(np.shape(array))}")
  p = _checks.concrete(pref)
  if p is not None:
    if not np.all((p >= 0) & (p <= 1)):
      raise ValueError("pref entries must be probabilities in [0, 1]")
    if not np.allclose(p + np.swapaxes(p, -1, -2), 1.0, rtol=0, atol=1e-5):
      raise ValueError("pref must satisfy pref[a1, a2] + pref[a2, a1] = 1 (within 1e-5)")


def _context_mean(values, context_probs):
  if context_probs is None:
    return jnp.mean(values)
  if np.ndim(values) == 0 or np.shape(context_probs) != np.shape(values)[:1]:
    raise ValueError(f"context_probs must have shape [X] = {list(np.shape(values)[:1])} (the first "
                     f"context axis), got {list(np.shape(context_probs))}")
  return jnp.tensordot(jnp.asarray(context_probs, values.dtype), values, axes=1).mean()


def _preferred_over(pref, logp):
  """(P pi)(a) = P(a beats a' ~ pi), shape [..., K]."""
  return jnp.einsum("...ab,...b->...a", pref, jnp.exp(logp))


def game_value(logp1: ArrayLike, logp2: ArrayLike, ref_logp: ArrayLike, pref: ArrayLike, eta: ArrayLike, *,
    context_probs: ArrayLike | None = None) -> jax.Array:
  """J(pi1, pi2) = E_x[pi1^T P pi2 - eta KL(pi1 || pi0) + eta KL(pi2 || pi0)].

  Args:
    logp1, logp2: [..., K] the max- and min-player's policies.
    ref_logp: [..., K] log pi0.
    pref: [..., K, K].
    eta: > 0.
    context_probs: optional [X] weights over the first axis.

  Returns:
    scalar game value.
  """
  _check_game(ref_logp, pref, eta, logp1, logp2)
  pref = jnp.asarray(pref)
  payoff = jnp.sum(jnp.exp(logp1) * _preferred_over(pref, logp2), axis=-1)
  per_context = payoff - eta * kl(logp1, ref_logp) + eta * kl(logp2, ref_logp)
  return _context_mean(per_context, context_probs)


def best_response(logp_opponent: ArrayLike, ref_logp: ArrayLike, pref: ArrayLike, eta: ArrayLike) -> jax.Array:
  """argmax_{pi1} J(pi1, pi_opp) = log_softmax(ref_logp + P pi_opp / eta) (Definition 2.2 with reward
  P pi_opp). As P^T = 1 - P, the min-player's best response to pi_opp is the same policy.

  Returns:
    [..., K] log-probabilities.
  """
  _check_game(ref_logp, pref, eta, logp_opponent)
  return jax.nn.log_softmax(ref_logp + _preferred_over(jnp.asarray(pref), logp_opponent) / eta, axis=-1)


def duality_gap(logp: ArrayLike, ref_logp: ArrayLike, pref: ArrayLike, eta: ArrayLike, *,
    context_probs: ArrayLike | None = None, per_context: bool = False) -> jax.Array:
  """max_{pi1} J(pi1, pi) - min_{pi2} J(pi, pi2), zero exactly at the Nash equilibrium.

  Closed form: since pi^T P pi = 1/2, Lemma 2.4 gives max_{pi1} J(pi1, pi) = 1/2 + eta KL(pi || BR(pi))
  and min_{pi2} J(pi, pi2) = 1/2 - eta KL(pi || BR(pi)), BR = best_response; so the gap per context is
  2 eta KL(pi || BR(pi)).

  Args:
    logp: [..., K] the policy.
    ref_logp, pref, eta, context_probs: as in game_value.
    per_context: return the [...] per-context gaps instead of their average.

  Returns:
    scalar gap (or [...] when per_context).
  """
  gaps = 2.0 * eta * kl(logp, best_response(logp, ref_logp, pref, eta))
  return gaps if per_context else _context_mean(gaps, context_probs)


def default_nash_tol(dtype) -> float:
  """Default duality-gap tolerance of nash_equilibrium: 1e-10 in float64, 1e-6 in float32."""
  return 1e-10 if jnp.finfo(dtype).bits >= 64 else 1e-6


def extragradient_step(logp: ArrayLike, ref_logp: ArrayLike, pref: ArrayLike, eta: ArrayLike,
    alpha: ArrayLike) -> jax.Array:
  """One predictive-update extragradient step of the symmetric game (Cen, Wei & Chi 2021, Eq. (14)):

    pi_bar  ∝ pi_t^(1 - alpha eta) pi0^(alpha eta) exp(alpha P pi_t)
    pi_t+1  ∝ pi_t^(1 - alpha eta) pi0^(alpha eta) exp(alpha P pi_bar)

  Args:
    logp, ref_logp: [..., K] pi_t and log pi0.
    pref: [..., K, K].
    eta: > 0.
    alpha: step size, 0 < alpha <= 1 / (eta + 1) for the contraction of nash_equilibrium.

  Returns:
    [..., K] log pi_t+1.
  """
  def mirror_step(logp_play):
    return jax.nn.log_softmax((1.0 - alpha * eta) * logp + alpha * eta * ref_logp
                              + alpha * _preferred_over(pref, logp_play), axis=-1)

  return mirror_step(mirror_step(logp))


def nash_equilibrium(ref_logp: ArrayLike, pref: ArrayLike, eta: ArrayLike, *, tol: float | None = None,
    max_iter: int = 100_000) -> tuple[jax.Array, jax.Array]:
  """The symmetric Nash equilibrium pi* ∝ pi0 exp(P pi* / eta) of the KL-regularized game.

  Predictive-update extragradient for entropy-regularized matrix games (Cen, Wei & Chi 2021), run on the
  symmetric game with one policy (both players' iterates coincide by symmetry), step alpha = 1/(eta + 1)
  (extragradient_step). KL(pi* || pi_t) contracts by at least 1/(1 + eta) per step (their Theorem 1, with
  ||P - 1/2||_max <= 1/2), so it converges for every eta > 0, at a rate that slows as eta -> 0 (where the
  plain best-response iteration cycles). Stops when every context's duality gap is <= tol.

  Args:
    ref_logp: [..., K] log pi0.
    pref: [..., K, K].
    eta: > 0.
    tol: duality-gap tolerance (default 1e-10 in float64, 1e-6 in float32).
    max_iter: maximum iterations (static).

  Returns:
    (logp [..., K], gap): the policy and its context-averaged duality gap.
  """
  _check_game(ref_logp, pref, eta)
  _checks.check_positive_int("max_iter", max_iter)
  ref_logp = jnp.asarray(ref_logp)
  pref = jnp.asarray(pref, ref_logp.dtype)
  tol = default_nash_tol(ref_logp.dtype) if tol is None else tol
  alpha = 1.0 / (eta + 1.0)

  def gap_of(logp):
    return jnp.max(duality_gap(logp, ref_logp, pref, eta, per_context=True))

  def step(state):
    logp, it, _ = state
    new = extragradient_step(logp, ref_logp, pref, eta, alpha)
    return new, it + 1, gap_of(new)

  def keep_going(state):
    _, it, gap = state
    return (gap > tol) & (it < max_iter)

  start = jax.nn.log_softmax(ref_logp, axis=-1)
  logp, _, _ = jax.lax.while_loop(keep_going, step, (start, jnp.int32(0), gap_of(start)))
  return logp, duality_gap(logp, ref_logp, pref, eta)


def saddle_point_gap(logp1: ArrayLike, logp2: ArrayLike, ref_logp: ArrayLike, payoff: ArrayLike,
    eta: ArrayLike) -> jax.Array:
  """max_{pi} J(pi, pi2) - min_{pi} J(pi1, pi) per context for a general payoff matrix M [..., K, K]
  (J(pi1, pi2) = pi1^T M pi2 - eta KL(pi1 || pi0) + eta KL(pi2 || pi0)). By Lemma 2.4,
  max_pi J(pi, pi2) = eta log E_pi0 exp(M pi2 / eta) + eta KL(pi2 || pi0) and
  min_pi J(pi1, pi) = -eta log E_pi0 exp(-M^T pi1 / eta) - eta KL(pi1 || pi0).

  Returns:
    [...] gaps >= 0, zero exactly at the saddle point.
  """
  up = jax.nn.logsumexp(ref_logp + jnp.einsum("...ab,...b->...a", payoff, jnp.exp(logp2)) / eta, axis=-1)
  down = jax.nn.logsumexp(ref_logp - jnp.einsum("...ab,...a->...b", payoff, jnp.exp(logp1)) / eta, axis=-1)
  return eta * (up + down + kl(logp1, ref_logp) + kl(logp2, ref_logp))


def saddle_point(ref_logp: ArrayLike, payoff: ArrayLike, eta: ArrayLike, *, tol: float | None = None,
    max_iter: int = 100_000) -> tuple[jax.Array, jax.Array, jax.Array]:
  """The saddle point (pi1, pi2) of max_{pi1} min_{pi2} pi1^T M pi2 - eta KL(pi1 || pi0) + eta KL(pi2 || pi0)
  for a general payoff M [..., K, K] (no symmetry needed: e.g. a pessimistic preference estimate).

  The two-player predictive-update extragradient of Cen, Wei & Chi (2021), step
  alpha = 1 / (eta + max M - min M) (their condition with ||M - c||_max, c the mid-range):

    pi1_bar ∝ pi1^(1-alpha eta) pi0^(alpha eta) exp(alpha M pi2),   pi2_bar ∝ ... exp(-alpha M^T pi1)
    pi1'    ∝ pi1^(1-alpha eta) pi0^(alpha eta) exp(alpha M pi2_bar), pi2' ∝ ... exp(-alpha M^T pi1_bar)

  It converges linearly for every eta > 0; stops when every context's saddle_point_gap is <= tol.
  pi1 is the max-player's max-min policy: argmax_{pi1} min_{pi2} J(pi1, pi2).

  Args:
    ref_logp: [..., K] log pi0.
    payoff: [..., K, K] M.
    eta: > 0.
    tol: gap tolerance (default 1e-10 in float64, 1e-6 in float32).
    max_iter: maximum iterations (static).

  Returns:
    (logp1 [..., K], logp2 [..., K], gap [...]): the policies and each context's gap.
  """
  _checks.check_positive("eta", eta)
  _checks.check_positive_int("max_iter", max_iter)
  shape = np.shape(payoff)
  if len(shape) < 2 or shape[-1] != shape[-2] or np.shape(ref_logp) != shape[:-1]:
    raise ValueError(f"payoff must have shape [..., K, K] and ref_logp [..., K]; got payoff {list(shape)}, "
                     f"ref_logp {list(np.shape(ref_logp))}")
  ref_logp = jnp.asarray(ref_logp)
  payoff = jnp.asarray(payoff, ref_logp.dtype)
  tol = default_nash_tol(ref_logp.dtype) if tol is None else tol
  alpha = 1.0 / (eta + jnp.max(payoff) - jnp.min(payoff))

  def mirror(logp, push):
    return jax.nn.log_softmax((1.0 - alpha * eta) * logp + alpha * eta * ref_logp + alpha * push, axis=-1)

  def push1(logp2):
    return jnp.einsum("...ab,...b->...a", payoff, jnp.exp(logp2))

  def push2(logp1):
    return -jnp.einsum("...ab,...a->...b", payoff, jnp.exp(logp1))

  def step(state):
    logp1, logp2, it, _ = state
    bar1, bar2 = mirror(logp1, push1(logp2)), mirror(logp2, push2(logp1))
    new1, new2 = mirror(logp1, push1(bar2)), mirror(logp2, push2(bar1))
    return new1, new2, it + 1, jnp.max(saddle_point_gap(new1, new2, ref_logp, payoff, eta))

  def keep_going(state):
    return (state[3] > tol) & (state[2] < max_iter)

  start = jax.nn.log_softmax(ref_logp, axis=-1)
  init = (start, start, jnp.int32(0), jnp.max(saddle_point_gap(start, start, ref_logp, payoff, eta)))
  logp1, logp2, _, _ = jax.lax.while_loop(keep_going, step, init)
  return logp1, logp2, saddle_point_gap(logp1, logp2, ref_logp, payoff, eta)
