"""NLHF on the bandit: the general preference oracle and its game against plain NumPy transcriptions,
the estimators against SciPy, the solvers' update rules, and online NLHF's records recomputed from its data."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.optimize import minimize

import gshf_jax as g
from bandit_sim import nlhf

ENV = dict(num_contexts=5, num_actions=6, dim=3, bound=2.0, eta=0.2)


@pytest.fixture(scope="module")
def env():
  return nlhf.make_preference_bandit(jax.random.key(0), **ENV, intransitivity=0.8)


def numpy_pair_feature(phi1, phi2):
  d = len(phi1)
  bilinear = [phi1[i] * phi2[j] - phi1[j] * phi2[i] for i in range(d) for j in range(i + 1, d)]
  return np.concatenate([phi1 - phi2, bilinear])


def numpy_preference(env):
  phi, theta = np.asarray(env.features), np.asarray(env.theta_star)
  x, k, _ = phi.shape
  return np.array([[[1 / (1 + np.exp(-numpy_pair_feature(phi[c, a], phi[c, b]) @ theta)) for b in range(k)]
                    for a in range(k)] for c in range(x)])


def test_preference_matrix_matches_numpy_and_is_a_preference(env):
  pref = np.asarray(nlhf.preference_matrix(env, env.theta_star))
  np.testing.assert_allclose(pref, numpy_preference(env), rtol=1e-12)
  np.testing.assert_allclose(pref + np.swapaxes(pref, 1, 2), 1.0, atol=1e-14)
  d = ENV["dim"]
  assert np.linalg.norm(env.theta_star) == pytest.approx(ENV["bound"])
  assert np.linalg.norm(env.theta_star[d:]) / ENV["bound"] == pytest.approx(0.8)


def test_bradley_terry_special_case():
  env = nlhf.make_preference_bandit(jax.random.key(1), **ENV, intransitivity=0.0)
  linear = nlhf.as_linear_bandit(env)
  r = np.asarray(linear.features @ linear.theta_star)
  bt = 1 / (1 + np.exp(-(r[:, :, None] - r[:, None, :])))
  np.testing.assert_allclose(nlhf.preference_matrix(env, env.theta_star), bt, rtol=1e-12)


def has_cycle(pref):
  k = pref.shape[0]
  return any(pref[a, b] > 0.5 and pref[b, c] > 0.5 and pref[c, a] > 0.5
             for a, b, c in itertools.permutations(range(k), 3))


def test_bilinear_part_makes_preferences_intransitive():
  cycles = []
  for seed in range(5):
    env = nlhf.make_preference_bandit(jax.random.key(seed), **ENV, intransitivity=1.0)
    pref = np.asarray(nlhf.preference_matrix(env, env.theta_star))
    cycles.append(any(has_cycle(p) for p in pref))
  assert all(cycles)
  bt = nlhf.make_preference_bandit(jax.random.key(0), **ENV, intransitivity=0.0)
  assert not any(has_cycle(p) for p in np.asarray(nlhf.preference_matrix(bt, bt.theta_star)))


def test_game_quantities_at_the_nash_equilibrium(env):
  assert abs(float(nlhf.duality_gap(env, nlhf.nash_policy(env)))) <= 1e-10
  star = nlhf.nash_policy(env, tol=1e-15)  # the gap is quadratic in the distance to pi*
  assert float(nlhf.game_value(env, star, star)) == pytest.approx(0.5, abs=1e-14)
  # Fixed point pi* ∝ pi0 exp(P pi* / eta), in NumPy.
  pref, p = numpy_preference(env), np.exp(np.asarray(star))
  logits = np.asarray(env.ref_logp) + np.einsum("xab,xb->xa", pref, p) / ENV["eta"]
  np.testing.assert_allclose(p, np.exp(logits) / np.exp(logits).sum(-1, keepdims=True), atol=1e-7)
  # Gap of another policy: max_pi1 J(pi1, pi) - min_pi2 J(pi, pi2), both by SciPy, per context.
  logp = np.asarray(env.ref_logp)
  q, ref, eta = np.exp(logp), np.asarray(env.ref_logp), ENV["eta"]

  def best_value(c, sign):
    def neg(z):
      pi = np.exp(z - z.max()) / np.exp(z - z.max()).sum()
      payoff = pi @ pref[c] @ q[c] if sign > 0 else q[c] @ pref[c] @ pi
      kl_pi = np.sum(pi * (np.log(pi) - ref[c]))
      return -(payoff - eta * kl_pi) if sign > 0 else payoff + eta * kl_pi
    return -minimize(neg, ref[c].copy(), method="BFGS", options={"gtol": 1e-10}).fun * sign

  gaps = []
  for c in range(ENV["num_contexts"]):
    kl_q = np.sum(q[c] * (logp[c] - ref[c]))
    gaps.append((best_value(c, 1) + eta * kl_q) - (best_value(c, -1) - eta * kl_q))
  assert float(nlhf.duality_gap(env, env.ref_logp)) == pytest.approx(np.mean(gaps), rel=1e-6)


def test_win_rate_is_a_plain_double_sum(env):
  rng = np.random.default_rng(0)
  p1, p2 = (np.log(rng.dirichlet(np.ones(6), size=5)) for _ in range(2))
  pref = numpy_preference(env)
  expected = np.mean([np.exp(p1[c]) @ pref[c] @ np.exp(p2[c]) for c in range(5)])
  assert float(nlhf.win_rate(env, p1, p2)) == pytest.approx(expected, rel=1e-12)


def test_collected_labels_follow_the_oracle(env):
  n = 20_000
  data = jax.tree.map(np.asarray, nlhf.collect_preferences(jax.random.key(3), env, env.ref_logp, env.ref_logp, n))
  pref = numpy_preference(env)
  p = pref[data.ctx, data.a1, data.a2]
  # The labels' sum against its exact mean and variance given the drawn pairs.
  z = (data.y.sum() - p.sum()) / np.sqrt(np.sum(p * (1 - p)))
  assert abs(z) < 4
  counts = np.bincount(data.a1[data.ctx == 0], minlength=6) / np.sum(data.ctx == 0)
  np.testing.assert_allclose(counts, np.exp(env.ref_logp[0]), atol=0.04)


def test_preference_mle_and_uncertainty_against_scipy(env, scipy_bt_mle):
  data = nlhf.collect_preferences(jax.random.key(4), env, env.ref_logp, env.ref_logp, 300)
  fit = nlhf.fit_preferences(env, data, lam=1.0)
  phi = np.asarray(env.features)
  psi = np.array([numpy_pair_feature(phi[c, a], phi[c, b]) for c, a, b in zip(data.ctx, data.a1, data.a2)])
  np.testing.assert_allclose(fit.theta, scipy_bt_mle(psi, np.asarray(data.y), ENV["bound"]), atol=2e-5)
  cov = np.eye(psi.shape[1]) + psi.T @ psi
  np.testing.assert_allclose(fit.cov, cov, rtol=1e-12)
  gamma = np.asarray(nlhf.pair_uncertainty(env, fit.cov))
  c, a, b = 2, 1, 4
  v = numpy_pair_feature(phi[c, a], phi[c, b])
  assert gamma[c, a, b] == pytest.approx(np.sqrt(v @ np.linalg.solve(cov, v)), rel=1e-10)
  np.testing.assert_allclose(np.diagonal(gamma, axis1=1, axis2=2), 0.0, atol=1e-12)


def test_pessimistic_policy(env):
  data = nlhf.collect_preferences(jax.random.key(5), env, env.ref_logp, env.ref_logp, 100)
  fit = nlhf.fit_preferences(env, data, lam=1.0)
  np.testing.assert_allclose(nlhf.pessimistic_policy(env, fit, 0.0, tol=1e-15),
                             nlhf.nash_policy(env, fit.theta, tol=1e-15), atol=1e-7)
  beta = 0.5
  payoff = nlhf.preference_matrix(env, fit.theta) - beta * nlhf.pair_uncertainty(env, fit.cov)
  eta, ref = ENV["eta"], env.ref_logp

  def lower_value(logp1):  # min_pi2 J(pi1, pi2) in closed form, per context
    return (-eta * jax.nn.logsumexp(ref - jnp.einsum("xab,xa->xb", payoff, jnp.exp(logp1)) / eta, axis=-1)
            - eta * g.kl(logp1, ref))

  pess = nlhf.pessimistic_policy(env, fit, beta)
  # The pessimistic policy maximizes the lower value: no random perturbation of it does better.
  for seed in range(20):
    other = jax.nn.log_softmax(pess + 0.3 * jax.random.normal(jax.random.key(seed), pess.shape), axis=-1)
    assert np.all(np.asarray(lower_value(pess)) >= np.asarray(lower_value(other)) - 1e-12)
  assert np.all(np.asarray(lower_value(pess)) >= np.asarray(lower_value(nlhf.nash_policy(env, fit.theta))) - 1e-12)


def test_reward_policy_is_the_gibbs_policy_of_the_bt_mle(env, scipy_bt_mle):
  data = jax.tree.map(np.asarray, nlhf.collect_preferences(jax.random.key(6), env, env.ref_logp,
                                                           env.ref_logp, 300))
  phi = np.asarray(env.features)
  w = scipy_bt_mle(phi[data.ctx, data.a1] - phi[data.ctx, data.a2], data.y, ENV["bound"])
  logits = np.asarray(env.ref_logp) + phi @ w / ENV["eta"]
  expected = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
  np.testing.assert_allclose(nlhf.bt_reward_policy(env, data), expected, atol=2e-4)


def test_solver_update_rules_against_numpy(env):
  pref = numpy_preference(env)
  ref, eta, alpha = np.asarray(env.ref_logp), 0.1, 0.5

  def normalize(z):
    return z - np.log(np.exp(z).sum(-1, keepdims=True))

  play = lambda logp: np.einsum("xab,xb->xa", pref, np.exp(logp))
  mu = normalize((1 - alpha * eta) * ref + alpha * eta * ref)
  first = {"nash_md": normalize(mu + alpha * play(mu)), "mirror_descent": normalize(ref + alpha * play(ref)),
           "sppo": normalize(ref + alpha * play(ref))}
  for solver, logp in first.items():
    gaps = nlhf.solver_trajectory(env.ref_logp, pref, eta, solver=solver, steps=3, step_size=alpha)
    assert float(gaps[0]) == pytest.approx(float(g.duality_gap(ref, ref, pref, eta)), rel=1e-12)
    assert float(gaps[1]) == pytest.approx(float(g.duality_gap(logp, ref, pref, eta)), rel=1e-10)
  gaps = nlhf.solver_trajectory(env.ref_logp, pref, eta, solver="extragradient", steps=300)
  assert float(gaps[-1]) <= 1e-10
  with pytest.raises(ValueError, match="solver"):
    nlhf.solver_trajectory(env.ref_logp, pref, eta, solver="fictitious_play", steps=3)


def test_relative_uncertainty_is_the_expected_pair_norm_and_bounds_the_preference_error(env):
  rng = np.random.default_rng(1)
  p1, p2 = (rng.dirichlet(np.ones(6), size=5) for _ in range(2))
  cov = np.eye(6) + 0.1 * np.ones((6, 6))
  counts = np.array([1.0, 0.0, 2.0, 0.0, 3.0])
  phi = np.asarray(env.features)
  norm = lambda v: np.sqrt(v @ np.linalg.solve(cov, v))
  per_context = np.array([sum(p1[c, a] * p2[c, b] * norm(numpy_pair_feature(phi[c, a], phi[c, b]))
                              for a in range(6) for b in range(6)) for c in range(5)])
  value = nlhf.relative_uncertainty(env, np.log(p2), np.log(p1), cov, counts)
  assert float(value) == pytest.approx(counts @ per_context, rel=1e-10)
  # pairs of the main agent with itself are informative: positive, though E psi = 0 there
  assert float(nlhf.relative_uncertainty(env, np.log(p1), np.log(p1), cov, counts)) > 0.1
  # the sigmoid link's error on (pi1, pi2) is at most beta / 4 times it, for every theta in the ellipsoid
  theta_hat, beta = rng.normal(size=6) * 0.3, 0.7
  chol = np.linalg.cholesky(np.linalg.inv(cov))
  psi = np.array([[[numpy_pair_feature(phi[c, a], phi[c, b]) for b in range(6)] for a in range(6)] for c in range(5)])
  expected_p = lambda theta: np.einsum("ca,cb,cab->c", p1, p2, 1 / (1 + np.exp(-psi @ theta)))
  for _ in range(200):
    u = rng.normal(size=6)
    theta = theta_hat + beta * chol @ (u / np.linalg.norm(u)) * rng.uniform() ** (1 / 6)  # ||.||_Sigma <= beta
    assert np.all(np.abs(expected_p(theta) - expected_p(theta_hat)) <= beta / 4 * per_context + 1e-12)


@pytest.fixture(scope="module")
def online_runs(env):
  # one compilation for every enhancer: its index is traced
  run = jax.jit(lambda k, e: nlhf.online_nlhf(k, env, enhancer=e, num_iterations=3, batch_size=10, beta=1.0,
                                                enhancer_steps=30))
  return {name: jax.tree.map(np.asarray, run(jax.random.key(7), jnp.int32(i))) for i, name in enumerate(nlhf.ENHANCERS)}


def test_online_records_recomputed_from_the_data(env, online_runs, scipy_bt_mle):
  phi = np.asarray(env.features)
  for enhancer, result in online_runs.items():
    h = result.history
    data = jax.tree.map(lambda v: v.reshape(-1), h.data)
    psi = np.array([numpy_pair_feature(phi[c, a], phi[c, b]) for c, a, b in zip(data.ctx, data.a1, data.a2)])
    # Iteration 0 has no data: theta = 0, P = 1/2, NE = pi0.
    np.testing.assert_allclose(h.theta[0], 0.0, atol=1e-12)
    assert h.main_gap[0] == pytest.approx(float(nlhf.duality_gap(env, env.ref_logp)), rel=1e-9)
    np.testing.assert_allclose(h.theta[2], scipy_bt_mle(psi[:20], data.y[:20], ENV["bound"]), atol=2e-5)
    main = nlhf.nash_policy(env, jnp.asarray(h.theta[2]))
    assert h.main_gap[2] == pytest.approx(float(nlhf.duality_gap(env, main)), rel=1e-8, abs=1e-12)
    final = nlhf.nash_policy(env, jnp.asarray(scipy_bt_mle(psi, data.y, ENV["bound"])))
    assert result.gap == pytest.approx(float(nlhf.duality_gap(env, final)), rel=1e-3, abs=1e-8)
  slack = online_runs["uncertainty"].history.enhancer_objective - online_runs["uncertainty"].history.enhancer_kl
  assert np.all(slack >= -1e-10)
  assert np.all(online_runs["uncertainty"].history.enhancer_objective[1:] > 0)


def test_online_nlhf_learns_the_equilibrium(env):
  result = jax.jit(lambda k: nlhf.online_nlhf(k, env, enhancer="random_pairs", num_iterations=6,
                                               batch_size=100))(jax.random.key(8))
  assert float(result.gap) < 0.2 * float(nlhf.duality_gap(env, env.ref_logp))


def test_bad_arguments(env):
  with pytest.raises(ValueError, match="intransitivity"):
    nlhf.make_preference_bandit(jax.random.key(0), **ENV, intransitivity=1.5)
  with pytest.raises(ValueError, match="dim"):
    nlhf.make_preference_bandit(jax.random.key(0), **{**ENV, "dim": 1})
  with pytest.raises(ValueError, match="enhancer"):
    nlhf.online_nlhf(jax.random.key(0), env, enhancer="best_of_n", num_iterations=2, batch_size=2)
