"""The linear bandit's exact quantities against an independent NumPy computation, and its BT oracle."""

import jax
import numpy as np
import pytest
from scipy.stats import chisquare

import bandit_sim as b

SETTINGS = dict(num_contexts=4, num_actions=5, dim=3, bound=1.5, eta=0.4)


@pytest.fixture(scope="module")
def env():
  return b.make_linear_bandit(jax.random.key(0), **SETTINGS)


def numpy_value(env, logp):
  phi, theta, ref, d0, eta = (np.asarray(v) for v in (env.features, env.theta_star, env.ref_logp,
                                                      env.context_probs, env.eta))
  p = np.exp(np.asarray(logp))
  r = phi @ theta
  total = 0.0
  for x in range(len(d0)):
    kl = sum(p[x, a] * (np.log(p[x, a]) - ref[x, a]) for a in range(p.shape[1]) if p[x, a] > 0)
    total += d0[x] * (p[x] @ r[x] - eta * kl)
  return total


def test_instance_respects_assumption_2_1(env):
  assert env.features.shape == (4, 5, 3)
  assert np.all(np.linalg.norm(env.features, axis=-1) <= 1 + 1e-12)
  assert np.linalg.norm(env.theta_star) == pytest.approx(1.5, rel=1e-12)
  np.testing.assert_allclose(np.exp(env.ref_logp).sum(-1), 1.0, rtol=1e-12)
  assert float(env.context_probs.sum()) == pytest.approx(1.0)


def test_value_and_optimal_policy_against_numpy(env):
  rng = np.random.default_rng(0)
  star = b.optimal_logp(env)
  r = np.asarray(env.features @ env.theta_star)
  tilt = np.exp(env.ref_logp) * np.exp(r / float(env.eta))
  np.testing.assert_allclose(np.exp(star), tilt / tilt.sum(-1, keepdims=True), rtol=1e-12)
  assert float(b.value(env, star)) == pytest.approx(numpy_value(env, star), rel=1e-12)
  assert float(b.suboptimality(env, star)) == pytest.approx(0.0, abs=1e-14)
  for _ in range(10):
    logp = np.log(rng.dirichlet(np.ones(5), size=4))
    assert float(b.value(env, logp)) == pytest.approx(numpy_value(env, logp), rel=1e-12)
    assert float(b.suboptimality(env, logp)) > 0


def test_collect_preferences_follows_the_policies_and_eq_1(env):
  rng = np.random.default_rng(1)
  logp1 = np.log(rng.dirichlet(np.ones(5), size=4))
  n = 200_000
  data = jax.jit(b.collect_preferences, static_argnums=4)(jax.random.key(1), env, logp1, env.ref_logp, n)
  ctx, a1, a2, y = (np.asarray(v) for v in data)
  assert chisquare(np.bincount(ctx, minlength=4), np.asarray(env.context_probs) * n).pvalue > 1e-3
  joint1 = np.bincount(ctx * 5 + a1, minlength=20)
  expected1 = (np.asarray(env.context_probs)[:, None] * np.exp(logp1)).ravel() * n
  assert chisquare(joint1, expected1).pvalue > 1e-3
  joint2 = np.bincount(ctx * 5 + a2, minlength=20)
  assert chisquare(joint2, (np.asarray(env.context_probs)[:, None] * np.exp(env.ref_logp)).ravel() * n).pvalue > 1e-3
  # Labels: the overall rate of y = 1 matches the mean BT probability within 5 standard errors.
  r = np.asarray(env.features @ env.theta_star)
  p = 1 / (1 + np.exp(-(r[ctx, a1] - r[ctx, a2])))
  assert abs(y.mean() - p.mean()) < 5 * np.sqrt(p.mean() * (1 - p.mean()) / n)
  np.testing.assert_allclose(b.feature_differences(env, data)[:3],
                             np.asarray(env.features)[ctx[:3], a1[:3]] - np.asarray(env.features)[ctx[:3], a2[:3]])


def test_vmap_over_seeds():
  make = lambda k: b.make_linear_bandit(k, **SETTINGS)
  envs = jax.jit(jax.vmap(make))(jax.random.split(jax.random.key(2), 6))
  gaps = jax.vmap(lambda e: b.suboptimality(e, e.ref_logp))(envs)
  assert gaps.shape == (6,) and np.all(gaps > 0)
  np.testing.assert_allclose(gaps[3], b.suboptimality(make(jax.random.split(jax.random.key(2), 6)[3]),
                                                      envs.ref_logp[3]), rtol=1e-12)


@pytest.mark.parametrize("name, kwargs", [("bound", dict(bound=0.0)), ("eta", dict(eta=-1.0)),
                                          ("num_actions", dict(num_actions=0)),
                                          ("ref_temperature", dict(ref_temperature=0.0))])
def test_bad_arguments(name, kwargs):
  with pytest.raises(ValueError, match=name):
    b.make_linear_bandit(jax.random.key(0), **{**SETTINGS, **kwargs})


def test_collect_preferences_rejects_mismatched_policy(env):
  with pytest.raises(ValueError, match="logp1"):
    b.collect_preferences(jax.random.key(0), env, np.zeros((3, 5)), env.ref_logp, 10)
