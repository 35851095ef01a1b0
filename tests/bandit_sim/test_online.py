"""Online / hybrid GSHF (Algorithm 2): each recorded quantity against an independent NumPy/SciPy
computation from the run's own data, the enhancer against SciPy, and the defining properties."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats
from scipy.optimize import minimize

import bandit_sim as b
import gshf_jax as g
from bandit_sim import offline, online

T, M, N_OFF, RUNS = 3, 8, 30, 64


@pytest.fixture(scope="module")
def setup():
  env = b.make_linear_bandit(jax.random.key(0), num_contexts=6, num_actions=5, dim=3, bound=2.0, eta=0.5)
  d_off = b.collect_preferences(jax.random.key(1), env, env.ref_logp, env.ref_logp, N_OFF)
  # One compilation for every enhancer (traced index) and RUNS keys.
  run = jax.jit(jax.vmap(lambda k, e: online.online_gshf(k, env, enhancer=e, num_iterations=T, batch_size=M,
                                                         beta=0.7, lam=1.0, offline_data=d_off),
                         in_axes=(0, None)))
  keys = jax.random.split(jax.random.key(2), RUNS)
  results = {name: jax.tree.map(np.asarray, run(keys, jnp.int32(i))) for i, name in enumerate(online.ENHANCERS)}
  return env, d_off, results


def first_run(result):
  return jax.tree.map(lambda v: v[0], result)


def numpy_gibbs(ref_logp, reward, eta):
  logits = np.asarray(ref_logp) + reward / eta
  w = np.exp(logits - logits.max(-1, keepdims=True))
  return w / w.sum(-1, keepdims=True)


def numpy_dphi(env, ctx, a1, a2):
  phi = np.asarray(env.features)
  return phi[ctx, a1] - phi[ctx, a2]


def accumulated(d_off, history, t):
  """D_off followed by D_1..D_t (t batches) as NumPy arrays."""
  return [np.concatenate([np.asarray(off)] + [np.asarray(batch[s]) for s in range(t)])
          for off, batch in zip(d_off, history.data)]


def test_main_agent_is_gibbs_of_the_mle_on_all_data_so_far(setup, scipy_bt_mle):
  env, d_off, results = setup
  result = first_run(results["uncertainty"])
  h = result.history
  for t in range(T):
    ctx, a1, a2, y = accumulated(d_off, h, t)
    theta = scipy_bt_mle(numpy_dphi(env, ctx, a1, a2), y, float(env.bound))
    expected = numpy_gibbs(env.ref_logp, np.asarray(env.features) @ theta, float(env.eta))
    np.testing.assert_allclose(np.exp(h.main_logp[t]), expected, atol=2e-6)
  # The returned dataset is D_off followed by the batches, in order.
  for full, off, batches in zip(result.data, d_off, h.data):
    np.testing.assert_array_equal(full, np.concatenate([np.asarray(off), batches.reshape(-1)]))


def numpy_enhancer_terms(env, cov, ctx, logp, main_logp):
  """sum_i ||phi(x_i, pi) - phi(x_i, pi1)||_{Sigma^{-1}} and eta sum_i KL(pi || pi1)(x_i), over each i."""
  phi = np.asarray(env.features)[ctx]  # [m, K, d]
  p, q = np.exp(np.asarray(logp))[ctx], np.exp(np.asarray(main_logp))[ctx]
  v = np.einsum("ik,ikd->id", p, phi) - np.einsum("ik,ikd->id", q, phi)
  norms = np.sqrt(np.einsum("id,id->i", v, np.linalg.solve(cov, v.T).T))
  return norms.sum(), float(env.eta) * stats.entropy(p, q, axis=-1).sum()


def test_recorded_eq_7_and_8_terms_and_lemma_4_3_quantities(setup):
  env, d_off, results = setup
  h = first_run(results["uncertainty"]).history
  star = np.asarray(b.optimal_logp(env))
  for t in range(T):
    ctx, a1, a2, _ = accumulated(d_off, h, t)
    dphi = numpy_dphi(env, ctx, a1, a2)
    cov = np.eye(3) + dphi.T @ dphi / M  # Sigma_{t,m} = lam I + (1/m) sum dphi dphi^T
    norms, kl = numpy_enhancer_terms(env, cov, h.data.ctx[t], h.enhancer_logp[t], h.main_logp[t])
    np.testing.assert_allclose(h.enhancer_objective[t], 0.7 * norms, rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(h.enhancer_kl[t], kl, rtol=1e-8, atol=1e-12)
    norms, kl = numpy_enhancer_terms(env, cov, h.data.ctx[t], star, h.main_logp[t])
    np.testing.assert_allclose(h.optimal_uncertainty[t], norms, rtol=1e-8)
    np.testing.assert_allclose(h.optimal_kl[t], kl, rtol=1e-8)


def test_option_two_enhancer_satisfies_eq_8_and_beats_the_main_agent(setup):
  _, _, results = setup
  h = results["uncertainty"].history
  assert np.all(h.enhancer_objective - h.enhancer_kl >= -1e-10)  # Eq. (8)
  assert np.all(h.enhancer_objective >= 0.0)  # pi1_t's own objective is 0
  assert np.mean(h.enhancer_objective > 1e-3) > 0.9  # and it does move away from pi1_t


def test_uncertainty_enhancer_against_scipy_multistart():
  rng = np.random.default_rng(0)
  for seed, beta in ((0, 0.3), (2, 3.0)):
    k_env, k_data, k_ctx, k_enh = jax.random.split(jax.random.key(seed), 4)
    env = b.make_linear_bandit(k_env, num_contexts=6, num_actions=5, dim=3, bound=2.0, eta=0.5)
    data = b.collect_preferences(k_data, env, env.ref_logp, env.ref_logp, 30)
    dphi = np.asarray(b.feature_differences(env, data))
    theta1 = np.asarray(g.bt_mle(dphi, data.y, env.bound))
    cov = np.eye(3) + dphi.T @ dphi / 10
    ctx = np.asarray(jax.random.categorical(k_ctx, jnp.log(env.context_probs), shape=(10,)))
    counts = online.context_counts(jnp.asarray(ctx), 6)
    result = online.uncertainty_enhancer(k_enh, env, jnp.asarray(theta1), jnp.asarray(cov), counts, beta)
    main = np.asarray(offline.gibbs_class_logp(env, theta1))
    phi = np.asarray(env.features)

    def terms(theta):
      logp = np.log(numpy_gibbs(env.ref_logp, phi @ theta, float(env.eta)))
      norms, kl = numpy_enhancer_terms(env, cov, ctx, logp, main)
      return beta * norms, kl

    best = 0.0
    for _ in range(12):
      start = theta1 + rng.normal(size=3) * rng.choice([0.05, 0.3, 1.0, 3.0])
      res = minimize(lambda th: -terms(th)[0], start, method="SLSQP", options={"maxiter": 200},
                     constraints=[{"type": "ineq", "fun": lambda th: np.subtract(*terms(th))},
                                  {"type": "ineq", "fun": lambda th: float(env.bound) ** 2 - th @ th}])
      gam, kl = terms(res.x)
      if kl <= gam + 1e-9 and res.x @ res.x <= float(env.bound) ** 2 + 1e-9:
        best = max(best, gam)
    gam, kl = terms(np.asarray(result.theta))
    np.testing.assert_allclose([result.objective, result.kl], [gam, kl], rtol=1e-8, atol=1e-12)
    assert kl <= gam + 1e-10 and np.linalg.norm(result.theta) <= float(env.bound) + 1e-9
    assert result.objective >= 0.97 * best, (seed, float(result.objective), best)


def test_practical_enhancers_are_what_section_5_2_says(setup):
  env, _, results = setup
  ref = np.asarray(env.ref_logp)
  for t in range(T):
    h = {name: jax.tree.map(lambda v: v[0, t], r.history) for name, r in results.items()}
    np.testing.assert_allclose(h["reference"].enhancer_logp, ref, atol=1e-12)
    np.testing.assert_allclose(h["random_pairs"].enhancer_logp, h["random_pairs"].main_logp, atol=1e-12)
    tempered = h["temperature"].main_logp / 2.0
    np.testing.assert_allclose(h["temperature"].enhancer_logp,
                               tempered - np.log(np.exp(tempered).sum(-1, keepdims=True)), atol=1e-12)
    bon = h["best_of_n"]
    np.testing.assert_allclose(bon.enhancer_logp, g.best_of_n_logprobs(bon.main_logp, env.features @ bon.theta, 4),
                               atol=1e-12)
    previous = ref if t == 0 else results["variant"].history.main_logp[0, t - 1]
    np.testing.assert_allclose(h["variant"].enhancer_logp, previous, atol=1e-12)


def test_pairs_are_drawn_from_the_main_agent_and_the_enhancer(setup):
  env, _, results = setup
  h = results["reference"].history  # iteration 1: pi1_1 = Gibbs(MLE(D_off)) is the same in every run
  ctx, a1, a2 = (np.asarray(v[:, 0]).reshape(-1) for v in (h.data.ctx, h.data.a1, h.data.a2))
  main = np.exp(h.main_logp[0, 0])
  np.testing.assert_allclose(np.exp(h.main_logp[:, 0]), np.broadcast_to(main, h.main_logp[:, 0].shape), atol=1e-12)
  X, K = main.shape
  for actions, policy in ((a1, main), (a2, np.exp(np.asarray(env.ref_logp)))):
    observed = np.bincount(ctx * K + actions, minlength=X * K)
    expected = len(ctx) * (np.asarray(env.context_probs)[:, None] * policy).reshape(-1)
    keep = expected > 0
    assert stats.chisquare(observed[keep], expected[keep] * observed[keep].sum() / expected[keep].sum()).pvalue > 1e-4


def test_output_is_the_best_validation_iterate_and_validation_is_unbiased(setup):
  env, _, results = setup
  r = results["uncertainty"]
  np.testing.assert_array_equal(r.selected, np.argmax(r.history.validation, axis=1))
  np.testing.assert_allclose(r.logp, r.history.main_logp[np.arange(RUNS), r.selected])
  logp = jnp.asarray(r.history.main_logp[0, -1])
  estimates = np.asarray(jax.vmap(lambda k: online.validation_value(k, env, logp, 50))(
      jax.random.split(jax.random.key(3), 4000)))
  stderr = estimates.std() / np.sqrt(estimates.size)
  assert abs(estimates.mean() - float(b.value(env, logp))) < 4 * stderr


def test_regret_is_cumulative_suboptimality(setup):
  env, _, results = setup
  h = first_run(results["best_of_n"]).history
  v_star = float(b.value(env, b.optimal_logp(env)))
  main = np.array([v_star - float(b.value(env, jnp.asarray(lp))) for lp in h.main_logp])
  enh = np.array([v_star - float(b.value(env, jnp.asarray(lp))) for lp in h.enhancer_logp])
  reg, reg_ave = online.regret(h)
  np.testing.assert_allclose(reg, np.cumsum(main), atol=1e-10)
  np.testing.assert_allclose(reg_ave, np.cumsum((main + enh) / 2), atol=1e-10)


def test_option_one_converges_with_full_coverage_offline_data():
  """Hybrid Option I with D_off from pi0 (full support): the main agent's suboptimality keeps falling,
  at about the KL-regularized rate 1/n (mean over 32 instances)."""
  def one(key):
    k_env, k_off, k_run = jax.random.split(key, 3)
    env = b.make_linear_bandit(k_env, num_contexts=6, num_actions=5, dim=3, bound=2.0, eta=0.5)
    d_off = b.collect_preferences(k_off, env, env.ref_logp, env.ref_logp, 100)
    return online.online_gshf(k_run, env, option="I", num_iterations=6, batch_size=100, lam=1.0,
                              offline_data=d_off, num_validation=10).history.main_suboptimality

  subopt = np.asarray(jax.jit(jax.vmap(one))(jax.random.split(jax.random.key(4), 32))).mean(0)
  n = 100 + 100 * np.arange(6)
  assert np.all(np.diff(subopt) < 0), subopt
  slope = np.polyfit(np.log(n), np.log(subopt), 1)[0]
  assert -1.4 < slope < -0.7, (slope, subopt)


def test_option_name_equals_traced_index_and_offline_only(setup, scipy_bt_mle):
  env, d_off, results = setup
  key = jax.random.split(jax.random.key(2), RUNS)[0]
  named = online.online_gshf(key, env, option="I", num_iterations=T, batch_size=M, beta=0.7, lam=1.0,
                             offline_data=d_off)
  np.testing.assert_allclose(named.history.main_logp, results["reference"].history.main_logp[0], atol=1e-12)
  d = named.data  # all_data_logp: the Gibbs policy of the MLE on D_off and every online batch
  theta = scipy_bt_mle(numpy_dphi(env, *(np.asarray(v) for v in d[:3])), np.asarray(d.y), float(env.bound))
  np.testing.assert_allclose(np.exp(named.all_data_logp),
                             numpy_gibbs(env.ref_logp, np.asarray(env.features) @ theta, float(env.eta)), atol=2e-6)
  # validation_key: the iterates are scored on exactly the draws validation_value makes with that key
  k_val = jax.random.key(9)
  keyed = online.online_gshf(key, env, option="I", num_iterations=T, batch_size=M, beta=0.7, lam=1.0,
                             offline_data=d_off, validation_key=k_val)
  expected = [online.validation_value(k_val, env, lp, 1000) for lp in keyed.history.main_logp]
  np.testing.assert_allclose(keyed.history.validation, expected, atol=1e-12)
  assert not np.allclose(keyed.history.validation, named.history.validation)
  logp, data = online.offline_only(jax.random.key(5), env, num_queries=40, behaviour_logp=env.ref_logp,
                                   offline_data=d_off)
  assert data.y.shape == (N_OFF + 40,)
  theta = scipy_bt_mle(numpy_dphi(env, *(np.asarray(v) for v in data[:3])), np.asarray(data.y), float(env.bound))
  np.testing.assert_allclose(np.exp(logp), numpy_gibbs(env.ref_logp, np.asarray(env.features) @ theta, float(env.eta)),
                             atol=2e-6)


@pytest.mark.parametrize("kwargs, match", [
    (dict(option="I", enhancer="best_of_n"), "exactly one"),
    (dict(), "exactly one"),
    (dict(option="III"), "option"),
    (dict(enhancer="ucb"), "enhancer"),
    (dict(enhancer=7), "enhancer"),
    (dict(option="II", beta=-1.0), "beta"),
    (dict(option="II", lam=0.0), "lam"),
    (dict(option="I", temperature=0.0), "temperature"),
    (dict(option="I", num_validation=0), "num_validation"),
    (dict(option="I", ref_logp=jnp.zeros((2, 2))), "ref_logp"),
])
def test_bad_arguments(setup, kwargs, match):
  env, _, _ = setup
  with pytest.raises(ValueError, match=match):
    online.online_gshf(jax.random.key(0), env, **{"num_iterations": 2, "batch_size": 2, **kwargs})


def test_bad_sizes(setup):
  env, _, _ = setup
  with pytest.raises(ValueError, match="batch_size"):
    online.online_gshf(jax.random.key(0), env, option="I", num_iterations=2, batch_size=0)
  with pytest.raises(ValueError, match="num_iterations"):
    online.online_gshf(jax.random.key(0), env, option="I", num_iterations=1.5, batch_size=2)
  with pytest.raises(ValueError, match="ctx"):
    b.collect_preferences(jax.random.key(0), env, env.ref_logp, env.ref_logp, 3, ctx=jnp.zeros(4, jnp.int32))
