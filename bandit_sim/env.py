"""The linear KL-regularized contextual bandit of Section 2 and its Bradley-Terry oracle (Eq. (1)).

Everything is exact: values are sums over the finite context and action sets, never Monte Carlo.
Environments and datasets are NamedTuples (pytrees), so `jax.vmap` over seeds batches them.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

import gshf_jax as g
from gshf_jax import _checks


class LinearBandit(NamedTuple):
  """r*(x, a) = <theta*, phi(x, a)> (Assumption 2.1), pi0 = exp(ref_logp), contexts x ~ context_probs."""
  features: jax.Array  # [X, K, d], each ||phi(x, a)|| <= 1
  theta_star: jax.Array  # [d], ||theta*|| = bound
  ref_logp: jax.Array  # [X, K] log pi0(a | x)
  context_probs: jax.Array  # [X] d0
  eta: jax.Array  # scalar KL coefficient
  bound: jax.Array  # scalar B


class Preferences(NamedTuple):
  """A preference dataset: y = 1 when a1 is preferred to a2 in context ctx."""
  ctx: jax.Array  # [n] int32
  a1: jax.Array  # [n] int32
  a2: jax.Array  # [n] int32
  y: jax.Array  # [n] int32 in {0, 1}


def make_linear_bandit(key: jax.Array, *, num_contexts: int, num_actions: int, dim: int, bound: ArrayLike,
    eta: ArrayLike, ref_temperature: float = 1.0, dtype=jnp.float64) -> LinearBandit:
  """A random instance of the linear KL-regularized bandit.

  phi(x, a): uniform directions with norms uniform in [0.5, 1]; theta*: a uniform direction with
  ||theta*|| = bound (the largest the class allows); pi0(.|x) ∝ exp(xi / ref_temperature) with
  xi ~ N(0, I) (larger temperature, flatter pi0); d0 uniform over the contexts.

  Args:
    key: PRNG key.
    num_contexts, num_actions, dim: X, K, d (static ints >= 1).
    bound: B > 0.
    eta: KL coefficient > 0.
    ref_temperature: > 0.
    dtype: float dtype of the arrays (float64 needs jax_enable_x64).

  Returns:
    LinearBandit.
  """
  for name, value in (("num_contexts", num_contexts), ("num_actions", num_actions), ("dim", dim)):
    _checks.check_positive_int(name, value)
  _checks.check_positive("bound", bound)
  _checks.check_positive("eta", eta)
  _checks.check_positive("ref_temperature", ref_temperature)
  k_dir, k_norm, k_theta, k_ref = jax.random.split(key, 4)
  directions = jax.random.normal(k_dir, (num_contexts, num_actions, dim), dtype)
  directions = directions / jnp.linalg.norm(directions, axis=-1, keepdims=True)
  norms = jax.random.uniform(k_norm, (num_contexts, num_actions, 1), dtype, 0.5, 1.0)
  theta = jax.random.normal(k_theta, (dim,), dtype)
  ref_logits = jax.random.normal(k_ref, (num_contexts, num_actions), dtype) / ref_temperature
  return LinearBandit(
      features=directions * norms,
      theta_star=bound * theta / jnp.linalg.norm(theta),
      ref_logp=jax.nn.log_softmax(ref_logits, axis=-1),
      context_probs=jnp.full((num_contexts,), 1.0 / num_contexts, dtype),
      eta=jnp.asarray(eta, dtype),
      bound=jnp.asarray(bound, dtype),
  )


def rewards(env: LinearBandit, theta: ArrayLike) -> jax.Array:
  """r_theta(x, a) = <theta, phi(x, a)>, [X, K]."""
  return env.features @ theta


def value(env: LinearBandit, logp: ArrayLike) -> jax.Array:
  """J(pi) of Eq. (2): E_{x ~ d0}[E_{a ~ pi} r*(x, a) - eta KL(pi(.|x) || pi0(.|x))], exact."""
  per_context = g.regularized_value(logp, env.ref_logp, rewards(env, env.theta_star), env.eta)
  return env.context_probs @ per_context


def optimal_logp(env: LinearBandit) -> jax.Array:
  """pi*, the Gibbs policy of r* (Definition 2.2), [X, K]."""
  return g.gibbs_logprobs(env.ref_logp, rewards(env, env.theta_star), env.eta)


def suboptimality(env: LinearBandit, logp: ArrayLike) -> jax.Array:
  """J(pi*) - J(pi) >= 0."""
  return value(env, optimal_logp(env)) - value(env, logp)


def preference_probability(env: LinearBandit, ctx: ArrayLike, a1: ArrayLike, a2: ArrayLike) -> jax.Array:
  """Eq. (1): P(a1 > a2 | x) = sigmoid(r*(x, a1) - r*(x, a2))."""
  r = rewards(env, env.theta_star)
  return jax.nn.sigmoid(r[ctx, a1] - r[ctx, a2])


def collect_preferences(key: jax.Array, env: LinearBandit, logp1: ArrayLike, logp2: ArrayLike, n: int,
    ctx: ArrayLike | None = None) -> Preferences:
  """n comparisons: x ~ d0, a1 ~ pi1(.|x), a2 ~ pi2(.|x), y ~ Bernoulli(P(a1 > a2 | x)) (Eq. (1)).

  Args:
    key: PRNG key.
    env: LinearBandit.
    logp1, logp2: [X, K] the two behaviour policies.
    n: static number of comparisons >= 1.
    ctx: optional [n] contexts already drawn (Algorithm 2 observes x_{t,i} before choosing pi2_t);
      by default x ~ d0.

  Returns:
    Preferences with [n] arrays.
  """
  return sample_comparisons(key, env, logp1, logp2, n, ctx, lambda c, a1, a2: preference_probability(env, c, a1, a2))


def sample_comparisons(key: jax.Array, env: LinearBandit, logp1: ArrayLike, logp2: ArrayLike, n: int,
    ctx: ArrayLike, probability: ArrayLike) -> Preferences:
  """x ~ d0 (unless ctx is given), a1 ~ pi1(.|x), a2 ~ pi2(.|x), y ~ Bernoulli(probability(x, a1, a2)): the
  sampling shared by every preference oracle (Bradley-Terry here, general in bandit_sim.nlhf)."""
  _checks.check_positive_int("n", n)
  for name, logp in (("logp1", logp1), ("logp2", logp2)):
    _checks.check_shape(name, logp, env.ref_logp.shape)
  k_ctx, k1, k2, k_y = jax.random.split(key, 4)
  if ctx is None:
    ctx = jax.random.categorical(k_ctx, jnp.log(env.context_probs), shape=(n,))
  _checks.check_shape("ctx", ctx, (n,))
  _checks.check_index("ctx", ctx, env.ref_logp.shape[-2])
  a1 = jax.random.categorical(k1, logp1[ctx])
  a2 = jax.random.categorical(k2, logp2[ctx])
  y = jax.random.bernoulli(k_y, probability(ctx, a1, a2))
  as_int = lambda v: v.astype(jnp.int32)
  return Preferences(as_int(ctx), as_int(a1), as_int(a2), as_int(y))


def check_preferences(env: LinearBandit, data: Preferences) -> None:
  """ValueError naming the array when a concrete dataset's context or action index is out of range, or a
  label is not 0 / 1 (skipped for traced data)."""
  num_contexts, num_actions = env.ref_logp.shape[-2:]
  _checks.check_index("data.ctx", data.ctx, num_contexts)
  _checks.check_index("data.a1", data.a1, num_actions)
  _checks.check_index("data.a2", data.a2, num_actions)
  _checks.check_index("data.y", data.y, 2)


def feature_differences(env: LinearBandit, data: Preferences) -> jax.Array:
  """dphi_i = phi(x_i, a1_i) - phi(x_i, a2_i), [n, d]. Out-of-range indices raise ValueError (concrete
  data) or give NaN rows (traced data), never another context's or action's features."""
  check_preferences(env, data)
  phi = lambda a: env.features.at[data.ctx, a].get(mode="fill", fill_value=jnp.nan)
  return phi(data.a1) - phi(data.a2)


def expected_features(env: LinearBandit, logp: ArrayLike) -> jax.Array:
  """phi(x, pi) = E_{a ~ pi(.|x)} phi(x, a), [X, d]."""
  return jnp.einsum("xk,xkd->xd", jnp.exp(logp), env.features)
