"""The KL-regularized objective and its maximizer, the Gibbs policy (Section 2 of the paper).

A policy over K actions is its log-probabilities `logp [..., K]`; leading axes index contexts or batches.
"""

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from gshf_jax import _checks


def gibbs_logprobs(ref_logp: ArrayLike, reward: ArrayLike, eta: ArrayLike) -> jax.Array:
  """Definition 2.2 (policy improvement oracle): pi_r(a) ∝ pi0(a) exp(r(a) / eta).

  Args:
    ref_logp: [..., K] log pi0; -inf marks actions outside pi0's support (they keep probability 0).
    reward: [..., K] r(x, a).
    eta: KL coefficient, > 0 (a scalar or an array broadcasting against [...]+[1]).

  Returns:
    [..., K] log pi_r = log_softmax(ref_logp + reward / eta).
  """
  _checks.check_positive("eta", eta)
  _checks.check_same_last_axis("ref_logp", ref_logp, "reward", reward)
  return jax.nn.log_softmax(jnp.asarray(ref_logp) + jnp.asarray(reward) / eta, axis=-1)


def kl(logp: ArrayLike, logq: ArrayLike) -> jax.Array:
  """KL(p || q) = sum_a p(a) (log p(a) - log q(a)) on the last axis.

  Entries with p(a) = 0 contribute 0 (also where q(a) = 0); an entry with p(a) > 0 = q(a) makes the
  divergence +inf; a NaN anywhere in logp or logq makes it NaN. Gradients stay finite on
  zero-probability entries.

  Args:
    logp, logq: [..., K] log-probabilities.

  Returns:
    [...] KL divergences.
  """
  _checks.check_same_last_axis("logp", logp, "logq", logq)
  logp, logq = jnp.asarray(logp), jnp.asarray(logq)
  p = jnp.exp(logp)
  support = p > 0
  log_ratio = jnp.where(support, logp - jnp.where(support, logq, 0.0), 0.0)
  divergence = jnp.sum(jnp.where(support, p * log_ratio, 0.0), axis=-1)
  return jnp.where(jnp.any(jnp.isnan(logp) | jnp.isnan(logq), axis=-1), jnp.nan, divergence)


def expectation(logp: ArrayLike, values: ArrayLike) -> jax.Array:
  """E_{a~p}[values(a)] on the last axis, with zero-probability entries contributing 0 (NaN when logp
  holds NaN, or values hold NaN where p > 0)."""
  logp = jnp.asarray(logp)
  p = jnp.exp(logp)
  mean = jnp.sum(jnp.where(p > 0, p * values, 0.0), axis=-1)
  return jnp.where(jnp.any(jnp.isnan(logp), axis=-1), jnp.nan, mean)


def regularized_value(logp: ArrayLike, ref_logp: ArrayLike, reward: ArrayLike, eta: ArrayLike) -> jax.Array:
  """Eq. (2) for one context: E_{a~p}[r(a)] - eta * KL(p || pi0).

  Args:
    logp: [..., K] the policy evaluated.
    ref_logp: [..., K] log pi0.
    reward: [..., K].
    eta: KL coefficient, > 0.

  Returns:
    [...] regularized values; the Gibbs policy of `reward` maximizes it (Lemma G.6).
  """
  _checks.check_positive("eta", eta)
  _checks.check_same_last_axis("logp", logp, "ref_logp", ref_logp, "reward", reward)
  return expectation(logp, jnp.asarray(reward)) - eta * kl(logp, ref_logp)
