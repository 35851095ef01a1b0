"""The KL-regularized preference game: closed-form duality gap against brute force, convergence of the
Nash solver for small and large eta, the fixed-point equation, and the eta -> infinity limit."""

import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from scipy.optimize import minimize

from gshf_jax import best_response, duality_gap, game_value, kl, nash_equilibrium, saddle_point
from gshf_jax.nash import saddle_point_gap


def random_game(rng, x, k):
  """An intransitive preference: P = sigmoid(S - S^T) with random S, so P + P^T = 1."""
  s = rng.normal(size=(x, k, k)) * 2
  pref = 1 / (1 + np.exp(-(s - np.swapaxes(s, -1, -2))))
  ref = np.log(rng.dirichlet(np.ones(k), size=x))
  return ref, pref


def rock_paper_scissors():
  pref = np.array([[0.5, 1.0, 0.0], [0.0, 0.5, 1.0], [1.0, 0.0, 0.5]])
  return np.log(np.array([0.6, 0.3, 0.1])), pref


def test_game_value_matches_plain_sums():
  rng = np.random.default_rng(0)
  ref, pref = random_game(rng, 2, 4)
  p1, p2 = (np.log(rng.dirichlet(np.ones(4), size=2)) for _ in range(2))
  eta, w = 0.3, np.array([0.25, 0.75])
  per_context = [np.exp(p1[x]) @ pref[x] @ np.exp(p2[x])
                 - eta * np.sum(np.exp(p1[x]) * (p1[x] - ref[x]))
                 + eta * np.sum(np.exp(p2[x]) * (p2[x] - ref[x])) for x in range(2)]
  assert float(game_value(p1, p2, ref, pref, eta)) == pytest.approx(np.mean(per_context), rel=1e-12)
  assert float(game_value(p1, p2, ref, pref, eta, context_probs=w)) == pytest.approx(w @ per_context, rel=1e-12)


def test_duality_gap_closed_form_equals_best_response_values():
  rng = np.random.default_rng(1)
  ref, pref = random_game(rng, 3, 5)
  eta = 0.2
  pi = np.log(rng.dirichlet(np.ones(5), size=3))
  br = best_response(pi, ref, pref, eta)
  brute = game_value(br, pi, ref, pref, eta) - game_value(pi, br, ref, pref, eta)
  assert float(duality_gap(pi, ref, pref, eta)) == pytest.approx(float(brute), rel=1e-12)
  # The best response beats random deviations, for both players.
  for _ in range(20):
    other = np.log(rng.dirichlet(np.ones(5), size=3))
    assert game_value(other, pi, ref, pref, eta) <= game_value(br, pi, ref, pref, eta) + 1e-12
    assert game_value(pi, other, ref, pref, eta) >= game_value(pi, br, ref, pref, eta) - 1e-12


@pytest.mark.parametrize("eta", [1e-3, 1e-2, 0.1, 1.0, 10.0])
def test_nash_equilibrium_converges_and_is_a_fixed_point(eta):
  rng = np.random.default_rng(2)
  ref, pref = random_game(rng, 4, 6)
  logp, gap = nash_equilibrium(ref, pref, eta)
  assert -1e-15 <= float(gap) <= 1e-10
  per_context = duality_gap(logp, ref, pref, eta, per_context=True)
  assert np.all(per_context <= 1e-10)
  # Solved to rounding level, pi* = BR(pi*) entrywise.
  logp, _ = nash_equilibrium(ref, pref, eta, tol=1e-15)
  np.testing.assert_allclose(np.exp(best_response(logp, ref, pref, eta)), np.exp(logp), atol=1e-6)


def test_nash_beats_plain_best_response_iteration_on_rock_paper_scissors():
  """The best-response iteration cycles at small eta; the solver still converges (NE: uniform-ish)."""
  ref, pref = rock_paper_scissors()
  eta = 0.01
  logp = ref
  for _ in range(2000):
    logp = best_response(logp, ref, pref, eta)
  assert float(duality_gap(logp, ref, pref, eta)) > 0.1
  ne, gap = nash_equilibrium(ref, pref, eta)
  assert float(gap) <= 1e-10
  # At eta -> 0 the regularized NE approaches the uniform NE of the unregularized game.
  np.testing.assert_allclose(np.exp(ne), np.ones(3) / 3, atol=0.05)


def test_nash_tends_to_reference_as_eta_grows():
  rng = np.random.default_rng(3)
  ref, pref = random_game(rng, 2, 5)
  divergences = [float(jnp.mean(kl(nash_equilibrium(ref, pref, eta)[0], ref))) for eta in (0.1, 1.0, 10.0, 100.0)]
  assert all(a > b for a, b in zip(divergences, divergences[1:]))
  assert divergences[-1] < 1e-4


def test_nash_float32_and_jit():
  rng = np.random.default_rng(4)
  ref, pref = random_game(rng, 2, 4)
  solve = jax.jit(nash_equilibrium, static_argnames=("max_iter",))
  logp, gap = solve(jnp.asarray(ref, jnp.float32), jnp.asarray(pref, jnp.float32), 0.05)
  assert logp.dtype == jnp.float32 and float(gap) <= 1e-5


@given(seed=st.integers(0, 2**31), k=st.integers(2, 7), eta=st.floats(1e-3, 1e2))
def test_duality_gap_is_nonnegative_and_best_response_is_optimal(seed, k, eta):
  rng = np.random.default_rng(seed)
  ref, pref = random_game(rng, 1, k)
  pi = np.log(rng.dirichlet(np.ones(k), size=1))
  gap = float(duality_gap(pi, ref, pref, eta))
  assert gap >= -1e-12
  other = np.log(rng.dirichlet(np.ones(k), size=1))
  br = best_response(pi, ref, pref, eta)
  scale = 1e-10 * (1 + eta)
  assert float(game_value(other, pi, ref, pref, eta)) <= float(game_value(br, pi, ref, pref, eta)) + scale


def scipy_max_min(ref, payoff, eta):
  """argmax_{pi1} min_{pi2} J(pi1, pi2) by BFGS on identifiable softmax logits (the first fixed at 0) of
  the concave value V(pi1) = -eta log E_pi0 exp(-M^T pi1 / eta) - eta KL(pi1 || pi0) (inner min in
  closed form)."""
  def policy(z):
    z = np.concatenate([[0.0], z])
    p = np.exp(z - z.max())
    return p / p.sum()

  def neg_value(z):
    p = policy(z)
    inner = -payoff.T @ p / eta + ref
    lse = inner.max() + np.log(np.exp(inner - inner.max()).sum())
    return eta * lse + eta * np.sum(p * (np.log(p) - ref))

  return policy(minimize(neg_value, ref[1:] - ref[0], method="BFGS", options={"gtol": 1e-12}).x)


@pytest.mark.parametrize("eta", [0.1, 1.0])
def test_saddle_point_of_a_general_payoff_matches_scipy_max_min(eta):
  rng = np.random.default_rng(7)
  ref, pref = random_game(rng, 3, 5)
  payoff = pref - 0.4 * rng.uniform(size=pref.shape)  # no symmetry left: a pessimistic estimate
  logp1, logp2, gap = saddle_point(ref, payoff, eta, tol=1e-15)  # the gap is quadratic in the distance
  assert np.max(gap) <= 1e-15
  for x in range(3):
    np.testing.assert_allclose(np.exp(logp1[x]), scipy_max_min(ref[x], payoff[x], eta), atol=2e-7)
    # The min-player's policy is its best response to pi1: pi2 ∝ pi0 exp(-M^T pi1 / eta).
    br2 = ref[x] - payoff[x].T @ np.exp(logp1[x]) / eta
    np.testing.assert_allclose(np.exp(logp2[x]), np.exp(br2 - br2.max()) / np.exp(br2 - br2.max()).sum(),
                               atol=1e-7)


def test_saddle_point_of_a_symmetric_game_is_the_nash_equilibrium():
  ref, pref = random_game(np.random.default_rng(8), 4, 6)
  logp1, logp2, _ = saddle_point(ref, pref, 0.2, tol=1e-15)
  ne, _ = nash_equilibrium(ref, pref, 0.2, tol=1e-15)
  np.testing.assert_allclose(logp1, ne, atol=1e-7)
  np.testing.assert_allclose(logp2, ne, atol=1e-7)
  np.testing.assert_allclose(saddle_point_gap(ne, ne, ref, pref, 0.2),
                             duality_gap(ne, ref, pref, 0.2, per_context=True), atol=1e-12)


def test_saddle_point_rejects_bad_shapes():
  with pytest.raises(ValueError, match="payoff"):
    saddle_point(np.zeros(3), np.zeros((3, 4)), 0.1)
  with pytest.raises(ValueError, match="eta"):
    saddle_point(np.zeros(3), np.zeros((3, 3)), 0.0)
