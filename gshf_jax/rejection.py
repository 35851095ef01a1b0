"""Rejection sampling towards the Gibbs policy, multi-step RSO and best-of-n (Appendix A.2, E.2, H;
Section 5.2)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from gshf_jax import _checks


def _check_candidates(rewards, valid, num_samples):
  _checks.check_shape("rewards", rewards, (None,))
  if valid is not None:
    _checks.check_shape("valid", valid, rewards.shape)
  if valid is None:
    num_valid = rewards.shape[0]
  else:
    concrete_valid = _checks.concrete(valid)
    num_valid = None if concrete_valid is None else int(np.sum(concrete_valid))
  if num_valid is not None and num_samples > num_valid:
    raise ValueError(
        f"num_samples={num_samples} exceeds the {num_valid} valid candidates; "
        f"accepted range is 1..{num_valid}")


def rso_rejection_sample(key: jax.Array, rewards: ArrayLike, beta: ArrayLike, num_samples: int,
    valid: ArrayLike | None = None) -> jax.Array:
  """Statistical rejection sampling, Algorithm 1 of Liu et al. (2023, RSO), exact in distribution.

  Targets pi0 exp(r / beta) from K candidates drawn from pi0. Passes over the remaining candidates in
  index order; at the start of each pass the maximum reward over the *remaining* candidates is
  recomputed; candidate i is accepted with probability exp((r_i - max) / beta) (u ~ U[0,1), accept when
  u < ratio); accepted candidates leave the pool; sampling stops as soon as `num_samples` are accepted,
  even in the middle of a pass. The maximum is always accepted, so at most `num_samples` passes run:
  a `fori_loop` of that length with fixed shapes, so the function jits and vmaps.

  Args:
    key: PRNG key.
    rewards: [K] candidate rewards.
    beta: > 0, the rejection sampling coefficient (eta of the target Gibbs policy).
    num_samples: static int, 1 <= num_samples <= number of valid candidates.
    valid: optional [K] bool; invalid candidates are never accepted. If `valid` is traced and has fewer
      than num_samples True entries, the unfilled slots hold -1. NaN rewards raise ValueError when
      concrete; under jit a candidate with a NaN reward is never accepted (its slot stays -1).

  Returns:
    [num_samples] int32 accepted candidate indices, in acceptance order.
  """
  _checks.check_positive_int("num_samples", num_samples)
  rewards = jnp.asarray(rewards)
  _check_candidates(rewards, valid, num_samples)
  _checks.check_no_nan("rewards", rewards if valid is None else jnp.where(jnp.asarray(valid, bool), rewards, 0.0))
  _checks.check_positive("beta", beta)
  num_candidates = rewards.shape[0]
  uniform_dtype = jnp.promote_types(rewards.dtype, jnp.float32)
  remaining = jnp.ones(num_candidates, bool) if valid is None else jnp.asarray(valid, bool)
  accepted = jnp.full(num_samples, -1, jnp.int32)
  pass_keys = jax.random.split(key, num_samples)

  def one_pass(i, state):
    remaining, accepted, count = state
    max_reward = jnp.max(jnp.where(remaining, rewards, -jnp.inf))
    u = jax.random.uniform(pass_keys[i], (num_candidates,), uniform_dtype)
    ratio = jnp.exp(jnp.where(remaining, rewards - max_reward, -jnp.inf) / beta)
    accept = remaining & (u < ratio)
    position = count + jnp.cumsum(accept, dtype=jnp.int32)  # 1-based acceptance order within the whole run
    accept = accept & (position <= num_samples)  # the early stop
    slot = jnp.where(accept, position - 1, num_samples)  # out-of-range slots are dropped
    accepted = accepted.at[slot].set(jnp.arange(num_candidates, dtype=jnp.int32), mode="drop")
    return remaining & ~accept, accepted, count + jnp.sum(accept, dtype=jnp.int32)

  _, accepted, _ = jax.lax.fori_loop(0, num_samples, one_pass, (remaining, accepted, jnp.int32(0)))
  return accepted


def rso_pairs(key: jax.Array, rewards: ArrayLike, beta: ArrayLike, num_pairs: int,
    valid: ArrayLike | None = None) -> tuple[jax.Array, jax.Array]:
  """Appendix H's RSO pair construction: rejection-sample 2n candidates, shuffle, pair them up.

  `rso_rejection_sample` draws 2 * num_pairs candidates; a random permutation orders them; consecutive
  ones form pairs; the one with the higher reward is chosen (a tie keeps the permuted order). With a traced
  `valid` that leaves fewer than 2 * num_pairs candidates, the accepted ones pair up first and the pairs
  that hold an unfilled slot (-1) come last.

  Args:
    key: PRNG key.
    rewards: [K] candidate rewards.
    beta: > 0, the rejection sampling coefficient.
    num_pairs: static int >= 1 with 2 * num_pairs <= number of valid candidates.
    valid: optional [K] bool.

  Returns:
    (chosen [num_pairs], rejected [num_pairs]) int32 candidate indices.
  """
  _checks.check_positive_int("num_pairs", num_pairs)
  sample_key, shuffle_key = jax.random.split(key)
  picked = rso_rejection_sample(sample_key, rewards, beta, 2 * num_pairs, valid)
  picked = jax.random.permutation(shuffle_key, picked)
  picked = picked[jnp.argsort(picked < 0, stable=True)]  # unfilled slots (-1) pair up last
  first, second = picked[0::2], picked[1::2]
  rewards = jnp.asarray(rewards)
  first_wins = rewards[first] >= rewards[second]
  return jnp.where(first_wins, first, second), jnp.where(first_wins, second, first)


def acceptance_rate(ref_logp: ArrayLike, reward: ArrayLike, eta: ArrayLike) -> jax.Array:
  """Appendix E.2: expected acceptance of one rejection-sampling draw from pi0 towards pi0 exp(r / eta).

    E_{a ~ pi0}[exp((r(a) - max r) / eta)],  the maximum taken over pi0's support.

  Args:
    ref_logp: [..., K] log pi0 (-inf outside the support).
    reward: [..., K].
    eta: > 0.

  Returns:
    [...] acceptance probabilities in (0, 1].
  """
  _checks.check_positive("eta", eta)
  _checks.check_same_last_axis("ref_logp", ref_logp, "reward", reward)
  ref_logp, reward = jnp.broadcast_arrays(jnp.asarray(ref_logp), jnp.asarray(reward))
  support = ref_logp > -jnp.inf
  top = jnp.max(jnp.where(support, reward, -jnp.inf), axis=-1, keepdims=True)
  gap = jnp.where(support, reward - top, 0.0)
  return jnp.exp(jax.nn.logsumexp(ref_logp + gap / eta, axis=-1))


def multistep_etas(eta: ArrayLike, num_steps: int) -> jax.Array:
  """Figure 3 / Appendix E.2: the KL path eta_i = N * eta / i, i = 1..N, ending at eta_N = eta.

  Multi-step RSO samples towards pi0 exp(r / eta_i) from the step-(i-1) policy; each step tilts by
  r * (1/eta_i - 1/eta_{i-1}) = r / (N * eta), so the acceptance per step is that of one N-times-milder
  tilt.

  Args:
    eta: final KL coefficient > 0.
    num_steps: N >= 1 (static).

  Returns:
    [N] decreasing coefficients.
  """
  _checks.check_positive("eta", eta)
  _checks.check_positive_int("num_steps", num_steps)
  steps = jnp.arange(1, num_steps + 1, dtype=jnp.result_type(eta, jnp.float32))
  return num_steps * eta / steps


def best_of_n_logprobs(logp: ArrayLike, reward: ArrayLike, n: int) -> jax.Array:
  """Exact best-of-n policy (Appendix A.2, Section 5.2) on a finite action set.

  Draw n actions i.i.d. from pi, output the one of highest reward, ties to the lower action index.
  Ordering actions from worst to best (reward ascending, then index descending), with C(a) the
  probability of a draw ranked at or below a:  P(a) = C(a)^n - (C(a) - pi(a))^n, computed in log space.

  Args:
    logp: [..., K] log pi.
    reward: [..., K].
    n: number of draws >= 1 (may be traced).

  Returns:
    [..., K] log-probabilities of the best-of-n policy.
  """
  _checks.check_same_last_axis("logp", logp, "reward", reward)
  _checks.check_positive("n", n)
  n_value = _checks.concrete(n)
  if n_value is not None and not np.all(n_value == np.round(n_value)):
    raise ValueError(f"n must be a whole number >= 1, got {n_value.tolist()!r}")
  logp, reward = jnp.broadcast_arrays(jnp.asarray(logp), jnp.asarray(reward))
  index = jnp.broadcast_to(jnp.arange(logp.shape[-1]), logp.shape)
  order = jnp.lexsort((-index, reward), axis=-1)  # worst first
  sorted_logp = jnp.take_along_axis(logp, order, axis=-1)
  log_cum = jax.lax.cumlogsumexp(sorted_logp, axis=sorted_logp.ndim - 1)  # log C(a)
  log_below = jnp.concatenate(
      [jnp.full_like(log_cum[..., :1], -jnp.inf), log_cum[..., :-1]], axis=-1)  # log(C(a) - pi(a))
  # log(C^n - B^n) = n log C + log(1 - exp(n (log B - log C))).
  diff = jnp.where(sorted_logp > -jnp.inf, n * (log_below - log_cum), -jnp.inf)
  sorted_out = jnp.where(sorted_logp > -jnp.inf, n * log_cum + jnp.log(-jnp.expm1(diff)), -jnp.inf)
  inverse = jnp.argsort(order, axis=-1)
  return jnp.take_along_axis(sorted_out, inverse, axis=-1)


def best_of_n_kl_bound(n: int) -> float | jax.Array:
  """Section 5.2: KL(best-of-n || pi) <= log n - (n - 1) / n (Beirami et al. 2024)."""
  _checks.check_positive("n", n)
  return math.log(n) - (n - 1) / n if isinstance(n, (int, float)) else jnp.log(n) - (n - 1) / n
