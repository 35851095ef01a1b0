"""Rejection sampling (RSO Algorithm 1), RSO pairs, acceptance rates, multi-step paths and best-of-n,
against a plain-Python transcription, exact enumeration and Monte Carlo."""

import collections
import math

import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from scipy.stats import chi2_contingency, chisquare

from gshf_jax import (
  acceptance_rate,
  best_of_n_kl_bound,
  best_of_n_logprobs,
  gibbs_logprobs,
  kl,
  multistep_etas,
  rso_pairs,
  rso_rejection_sample,
)

REWARDS = np.array([0.3, -0.4, 0.9, 0.1, 0.85])
BETA = 0.5
DRAWS = 20_000


def python_rso(rng, rewards, num_samples, beta):
  """Algorithm 1 of Liu et al. (2023), transcribed line by line (candidates keyed by index)."""
  candidates = {c: r for c, r in enumerate(rewards)}
  accepted = []
  while len(accepted) < num_samples:
    max_reward = max(candidates.values())
    to_remove = []
    for c, r in candidates.items():
      u = rng.uniform()
      if u >= np.exp((r - max_reward) / beta):
        continue
      accepted.append(c)
      to_remove.append(c)
      if len(accepted) == num_samples:
        break
    for c in to_remove:
      candidates.pop(c)
  return tuple(accepted)


def exact_rso(rewards, num_samples, beta):
  """Exact probabilities of every ordered accepted tuple, by enumerating each pass's decisions."""
  out = collections.defaultdict(float)

  def run_pass(remaining, accepted, prob):
    top = max(rewards[i] for i in remaining)

    def walk(pos, accepted, prob, kept):
      if len(accepted) == num_samples:
        out[accepted] += prob
      elif pos == len(remaining):
        run_pass(kept, accepted, prob)
      else:
        i = remaining[pos]
        a = math.exp((rewards[i] - top) / beta)
        walk(pos + 1, accepted + (i,), prob * a, kept)
        if a < 1:
          walk(pos + 1, accepted, prob * (1 - a), kept + (i,))

    walk(0, accepted, prob, ())

  run_pass(tuple(range(len(rewards))), (), 1.0)
  return dict(out)


@pytest.fixture(scope="module")
def jax_tuples():
  sample = jax.jit(jax.vmap(lambda k: rso_rejection_sample(k, REWARDS, BETA, 3)))
  draws = np.asarray(sample(jax.random.split(jax.random.key(0), DRAWS)))
  return collections.Counter(map(tuple, draws.tolist()))


def test_exact_enumeration_sums_to_one():
  probs = exact_rso(REWARDS, 3, BETA)
  assert sum(probs.values()) == pytest.approx(1.0, abs=1e-12)
  assert all(len(set(t)) == 3 for t in probs)


def test_rso_matches_exact_distribution(jax_tuples):
  probs = exact_rso(REWARDS, 3, BETA)
  keys = sorted(probs, key=probs.get, reverse=True)
  expected = np.array([probs[k] for k in keys]) * DRAWS
  observed = np.array([jax_tuples.get(k, 0) for k in keys])
  assert sum(jax_tuples.values()) == observed.sum()  # nothing outside the support
  big = expected >= 5  # pool rare tuples into one bin
  obs, exp = observed[big], expected[big]
  if not big.all():
    obs, exp = np.append(obs, observed[~big].sum()), np.append(exp, expected[~big].sum())
  assert chisquare(obs, exp).pvalue > 1e-3


def test_rso_matches_plain_python_transcription(jax_tuples):
  rng = np.random.default_rng(0)
  python_tuples = collections.Counter(python_rso(rng, REWARDS, 3, BETA) for _ in range(DRAWS))
  keys = sorted(set(jax_tuples) | set(python_tuples))
  table = np.array([[jax_tuples.get(k, 0) for k in keys], [python_tuples.get(k, 0) for k in keys]])
  table = table[:, table.sum(0) >= 10]
  assert chi2_contingency(table).pvalue > 1e-3


def test_rso_valid_mask_float32_and_greedy_limit():
  key = jax.random.key(1)
  valid = np.array([True, False, True, True, False])
  draws = jax.vmap(lambda k: rso_rejection_sample(k, jnp.asarray(REWARDS, jnp.float32), BETA, 3, valid))(
      jax.random.split(key, 200))
  assert set(np.unique(draws)) <= {0, 2, 3}
  assert all(len(set(row)) == 3 for row in np.asarray(draws).tolist())
  # A tiny beta accepts only the maximum on each pass: candidates in decreasing reward order.
  np.testing.assert_array_equal(rso_rejection_sample(key, REWARDS, 1e-6, 4), [2, 4, 0, 3])


def test_rso_pairs_come_from_the_rejection_sample():
  key = jax.random.key(2)
  chosen, rejected = rso_pairs(key, REWARDS, BETA, 2)
  assert np.all(REWARDS[chosen] >= REWARDS[rejected])
  sample_key, _ = jax.random.split(key)
  picked = set(np.asarray(rso_rejection_sample(sample_key, REWARDS, BETA, 4)).tolist())
  assert set(np.concatenate([chosen, rejected]).tolist()) == picked
  batched = jax.jit(jax.vmap(lambda k: rso_pairs(k, REWARDS, BETA, 2)))(jax.random.split(key, 7))
  assert batched[0].shape == (7, 2)


def test_acceptance_rate_against_monte_carlo():
  rng = np.random.default_rng(3)
  p, reward, eta = rng.dirichlet(np.ones(6)), rng.normal(size=6), 0.4
  exact = float(acceptance_rate(np.log(p), reward, eta))
  n = 400_000
  a = rng.choice(6, size=n, p=p)
  accepted = rng.uniform(size=n) < np.exp((reward[a] - reward.max()) / eta)
  assert abs(accepted.mean() - exact) < 5 * math.sqrt(exact * (1 - exact) / n)


def test_acceptance_rate_worked_example_and_multistep_path():
  """Appendix E.2: a reward gap of 1 at eta = 0.1 accepts ~ exp(-10) = 4.5e-5 in one step; with
  N = ceil(1 / eta) + 1 steps along multistep_etas every step accepts at least exp(-1)."""
  eps = 1e-12
  one_step = float(acceptance_rate(np.log([1 - eps, eps]), np.array([0.0, 1.0]), 0.1))
  assert one_step == pytest.approx(math.exp(-10), rel=1e-6)
  assert 4.4e-5 < one_step < 4.6e-5
  rng = np.random.default_rng(4)
  ref = np.log(rng.dirichlet(np.ones(8), size=20))
  reward = rng.uniform(0, 1, size=(20, 8))
  eta = 0.1
  etas = np.asarray(multistep_etas(eta, math.ceil(1 / eta) + 1))
  previous, inverse_previous = ref, 0.0  # 1 / eta_0 = 0: the first step proposes from pi0
  for eta_i in etas:
    # Step i proposes from pi0 exp(r / eta_{i-1}) and tilts by r (1/eta_i - 1/eta_{i-1}).
    step = acceptance_rate(previous, reward, 1 / (1 / eta_i - inverse_previous))
    assert np.all(step >= math.exp(-1))
    previous, inverse_previous = gibbs_logprobs(ref, reward, eta_i), 1 / eta_i
  np.testing.assert_allclose(previous, gibbs_logprobs(ref, reward, eta), atol=1e-12)


def test_multistep_etas():
  np.testing.assert_allclose(multistep_etas(0.1, 3), [0.3, 0.15, 0.1], rtol=1e-6)
  np.testing.assert_allclose(multistep_etas(0.2, 1), [0.2], rtol=1e-6)


def test_best_of_n_hand_example_with_ties():
  # Uniform over 3 actions, rewards (1, 1, 0), n = 2, ties to the lower index.
  got = np.exp(best_of_n_logprobs(np.log(np.ones(3) / 3), np.array([1.0, 1.0, 0.0]), 2))
  np.testing.assert_allclose(got, [5 / 9, 3 / 9, 1 / 9], atol=1e-15)
  logp = np.log(np.array([0.2, 0.5, 0.3]))
  np.testing.assert_allclose(best_of_n_logprobs(logp, np.array([3.0, 1.0, 2.0]), 1), logp, atol=1e-15)


def test_best_of_n_against_monte_carlo():
  rng = np.random.default_rng(5)
  p = rng.dirichlet(np.ones(6))
  reward = np.array([0.5, 0.2, 0.5, -1.0, 0.9, 0.2])  # ties
  n, draws = 4, 100_000
  picks = rng.choice(6, size=(draws, n), p=p)
  r = reward[picks]
  winners = np.where(r == r.max(1, keepdims=True), picks, 6).min(1)
  observed = np.bincount(winners, minlength=6)
  expected = np.exp(np.asarray(best_of_n_logprobs(np.log(p), reward, n))) * draws
  assert expected.sum() == pytest.approx(draws)
  keep = expected > 0
  assert np.all(observed[~keep] == 0)
  assert chisquare(observed[keep], expected[keep]).pvalue > 1e-3


jit_best_of_n = jax.jit(best_of_n_logprobs)  # one compilation per k, not one per operation and k


@given(seed=st.integers(0, 2**31), k=st.integers(2, 9), n=st.integers(1, 30), ties=st.booleans())
def test_best_of_n_kl_below_bound(seed, k, n, ties):
  rng = np.random.default_rng(seed)
  logp = np.log(rng.dirichlet(np.ones(k) * 0.5))
  reward = rng.integers(0, 3, size=k).astype(float) if ties else rng.normal(size=k)
  bon = jit_best_of_n(logp, reward, n)
  assert float(jnp.exp(bon).sum()) == pytest.approx(1.0, abs=1e-12)
  assert float(kl(bon, logp)) <= best_of_n_kl_bound(n) + 1e-12
  # Best-of-n never lowers the expected reward.
  assert float(jnp.exp(bon) @ reward) >= float(np.exp(logp) @ reward) - 1e-12


def test_best_of_n_float32_and_jit_over_n():
  logp = jnp.log(jnp.array([0.1, 0.6, 0.3], jnp.float32))
  reward = jnp.array([2.0, 0.0, 1.0], jnp.float32)
  out = jax.jit(best_of_n_logprobs)(logp, reward, jnp.float32(3.0))
  assert out.dtype == jnp.float32
  # P(best) = 1 - 0.9^3; P(action 2) = 0.9^3 - 0.6^3; P(action 1) = 0.6^3.
  np.testing.assert_allclose(jnp.exp(out), [1 - 0.9 ** 3, 0.6 ** 3, 0.9 ** 3 - 0.6 ** 3], rtol=1e-5)


def test_best_of_n_kl_bound_values():
  assert best_of_n_kl_bound(1) == 0.0
  assert best_of_n_kl_bound(8) == pytest.approx(math.log(8) - 7 / 8)
