"""Offline GSHF (Algorithm 1) and offline DPO baselines, against independent NumPy/SciPy computations and
the algorithms' defining properties."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.optimize import NonlinearConstraint, minimize

import bandit_sim as b
from bandit_sim import offline


@pytest.fixture(scope="module")
def problem():
  env = b.make_linear_bandit(jax.random.key(0), num_contexts=6, num_actions=5, dim=3, bound=2.0, eta=0.5)
  data = b.collect_preferences(jax.random.key(1), env, env.ref_logp, env.ref_logp, 300)
  return env, data


def numpy_parts(env, data, lam, scipy_bt_mle):
  """theta_MLE by SciPy, Sigma and nu by NumPy: nothing from gshf_jax."""
  phi = np.asarray(env.features)
  ctx, a1, a2, y = (np.asarray(v) for v in data)
  dphi = phi[ctx, a1] - phi[ctx, a2]
  cov = lam * np.eye(3) + dphi.T @ dphi
  nu = np.asarray(env.context_probs) @ np.einsum("xk,xkd->xd", np.exp(np.asarray(env.ref_logp)), phi)
  return scipy_bt_mle(dphi, y, float(env.bound)), cov, nu


def numpy_gibbs(ref_logp, reward, eta):
  w = np.exp(np.asarray(ref_logp)) * np.exp(reward / eta)
  return w / w.sum(-1, keepdims=True)


def test_option_two_is_gibbs_of_penalized_mle_reward(problem, scipy_bt_mle):
  env, data = problem
  theta, cov, nu = numpy_parts(env, data, 1.0, scipy_bt_mle)
  phi = np.asarray(env.features)
  diff = phi - nu
  gamma = np.sqrt(np.einsum("xkd,xkd->xk", diff, np.linalg.solve(cov, diff[..., None])[..., 0]))
  beta = 0.8
  expected = numpy_gibbs(env.ref_logp, phi @ theta - beta * gamma, float(env.eta))
  got = np.exp(offline.offline_gshf(env, data, option="II", beta=beta, lam=1.0))
  np.testing.assert_allclose(got, expected, atol=1e-6)
  plug_in = np.exp(offline.offline_gshf(env, data, option="mle", beta=beta, lam=1.0))
  np.testing.assert_allclose(plug_in, numpy_gibbs(env.ref_logp, phi @ theta, float(env.eta)), atol=1e-6)


def test_option_one_beats_feasible_thetas_and_meets_the_dual_bound(problem):
  """Eq. (5) at the returned theta is >= at any feasible theta tried, and within 1e-6 of the minimax
  value min_{||u||_Sigma <= beta} sum_x d0 eta log sum_a pi0 exp((r_MLE - u.(phi - nu)) / eta), which
  bounds Eq. (5) over all policies and is attained in the class when its Gibbs parameter is feasible."""
  env, data = problem
  beta = 0.8
  fit = offline.fit_offline(env, data, lam=1.0)
  result = offline.solve_option_one(env, fit, beta)
  best = float(result.objective)
  rng = np.random.default_rng(0)
  objective = jax.jit(lambda t: offline.option_one_objective(env, t, fit, beta))
  for _ in range(200):
    t = rng.normal(size=3)
    t *= rng.uniform(0, float(env.bound)) / np.linalg.norm(t)
    assert float(objective(t)) <= best + 1e-10
  for t in (np.zeros(3), np.asarray(fit.theta_mle)):
    assert float(objective(t)) <= best + 1e-10

  phi, ref, d0, eta = (np.asarray(v) for v in (env.features, env.ref_logp, env.context_probs, env.eta))
  theta_mle, cov, nu = (np.asarray(v) for v in fit)

  def dual(u):
    r = phi @ (theta_mle - u) + u @ nu
    return d0 @ (eta * np.log(np.sum(np.exp(ref + r / eta), -1)))

  chol = np.linalg.cholesky(cov)
  res = minimize(lambda w: dual(np.linalg.solve(chol.T, w)), np.zeros(3), method="trust-constr",
                 constraints=[NonlinearConstraint(lambda w: w @ w, -np.inf, beta ** 2)],
                 options={"gtol": 1e-12, "xtol": 1e-12})
  u = np.linalg.solve(chol.T, res.x)  # ||u||_Sigma = ||w||
  assert best <= res.fun + 1e-8  # weak duality
  assert np.linalg.norm(theta_mle - u) <= float(env.bound)  # the dual's policy is in the class here
  assert best >= res.fun - 1e-6
  np.testing.assert_allclose(result.theta, theta_mle - u, atol=1e-3)
  # The solver's own certificate agrees: the dual's maximizer is in the class and the gap is ~0.
  assert bool(result.from_dual)
  assert float(result.dual_bound) == pytest.approx(res.fun, abs=1e-7)
  assert -1e-12 <= float(result.dual_bound - result.objective) < 1e-9  # >= 0 up to rounding


def test_option_one_at_the_kink_and_outside_the_class(problem):
  """A huge beta puts the maximizer on the kink E phi(pi) = nu (pi = pi0 for the default nu): the dual
  still solves it exactly. A tiny bound B forces the primal fallback, which beats every feasible theta."""
  env, data = problem
  fit = offline.fit_offline(env, data, lam=1.0)
  result = offline.solve_option_one(env, fit, 1e3)
  assert bool(result.from_dual) and float(result.dual_bound - result.objective) < 1e-7
  np.testing.assert_allclose(np.exp(offline.gibbs_class_logp(env, result.theta)), np.exp(env.ref_logp), atol=1e-6)
  small = env._replace(bound=jnp.asarray(0.05))
  result = offline.solve_option_one(small, fit, 0.1)
  assert not bool(result.from_dual) and np.linalg.norm(result.theta) <= 0.05 + 1e-12
  rng = np.random.default_rng(1)
  for _ in range(100):
    t = rng.normal(size=3)
    t *= rng.uniform(0, 0.05) / np.linalg.norm(t)
    assert float(offline.option_one_objective(small, t, fit, 0.1)) <= float(result.objective) + 1e-10


def test_dpo_in_the_gibbs_class_recovers_the_plug_in(problem):
  """In the class pi_theta, Eq. (9) is the BT negative log-likelihood of theta: DPO = option "mle"."""
  env, data = problem
  dpo = jax.jit(offline.offline_dpo, static_argnames=("param", "steps"))(env, data, param="gibbs", steps=3000)
  plug_in = offline.offline_gshf(env, data, option="mle", beta=1.0, lam=1.0)
  np.testing.assert_allclose(np.exp(dpo.logp), np.exp(plug_in), atol=1e-4)
  assert float(dpo.grad_norm) < 1e-5


def test_pessimistic_dpo_in_the_matched_class_is_option_two(problem):
  """Proposition 5.1: in the class pi ∝ pi0 exp((<theta, phi> - beta Gamma) / eta), Eq. (10)'s loss is the
  BT negative log-likelihood of theta, so pessimistic DPO outputs Option II's policy; the linear Gibbs
  class cannot represent r - beta Gamma, and its pessimistic DPO does not."""
  env, data = problem
  run = jax.jit(offline.offline_dpo, static_argnames=("param", "steps"))
  option_two = np.exp(offline.offline_gshf(env, data, option="II", beta=0.7, lam=1.0))
  matched = run(env, data, param="matched", pessimism=0.7, steps=3000)
  np.testing.assert_allclose(np.exp(matched.logp), option_two, atol=1e-6)
  assert float(matched.grad_norm) < 1e-7
  linear = run(env, data, param="gibbs", pessimism=0.7, steps=3000)
  assert 0.5 * np.abs(np.exp(linear.logp) - option_two).sum(-1).max() > 1e-3


def test_tabular_dpo_leaves_uncovered_actions_arbitrary(problem):
  """Appendix E.1: actions never compared keep their initial logits; two initializations reach the same
  loss with different mass on them."""
  env, _ = problem
  behaviour = jnp.where(jnp.arange(5) < 3, env.ref_logp, -jnp.inf)  # actions 3, 4 never played
  behaviour = jax.nn.log_softmax(behaviour, axis=-1)
  data = b.collect_preferences(jax.random.key(3), env, behaviour, behaviour, 2000)
  assert set(np.unique(np.concatenate([data.a1, data.a2]))) <= {0, 1, 2}
  run = jax.jit(offline.offline_dpo, static_argnames=("param", "steps"))
  first = run(env, data, param="tabular", steps=3000)
  shifted = env.ref_logp.at[:, :3].add(2.0)  # the loss cannot see a common shift of covered logits
  second = run(env, data, param="tabular", steps=3000, init_logits=shifted)
  assert float(first.loss) == pytest.approx(float(second.loss), abs=1e-6)
  mass_first = np.exp(first.logp)[:, 3:].sum(-1)
  mass_second = np.exp(second.logp)[:, 3:].sum(-1)
  assert np.all(np.abs(mass_first - mass_second) > 1e-3)


def test_tabular_training_length_may_be_traced(problem):
  """One compilation serves every training length: a traced `steps` gives the static run's policy, and
  the cosine decay equals optax's."""
  import optax
  env, data = problem
  static = jax.jit(offline.offline_dpo, static_argnames=("param", "steps"))(env, data, param="tabular", steps=40)
  traced = jax.jit(lambda s: offline.offline_dpo(env, data, param="tabular", steps=s))
  np.testing.assert_allclose(traced(jnp.int32(40)).logp, static.logp, rtol=1e-12)  # up to fusion order
  assert not np.allclose(traced(jnp.int32(80)).logp, static.logp)  # the length reaches the loop
  schedule = optax.cosine_decay_schedule(0.05, 40)
  for k in (0, 7, 39, 40, 55):
    assert float(offline.cosine_decay(0.05, jnp.int32(40))(k)) == pytest.approx(float(schedule(k)), rel=1e-12, abs=1e-15)


def test_bad_option(problem):
  env, data = problem
  with pytest.raises(ValueError, match="option"):
    offline.offline_gshf(env, data, option="III", beta=1.0, lam=1.0)
  with pytest.raises(ValueError, match="beta"):
    offline.offline_gshf(env, data, option="II", beta=-1.0, lam=1.0)
  with pytest.raises(ValueError, match="lam"):
    offline.offline_gshf(env, data, option="II", beta=1.0, lam=0.0)
  with pytest.raises(ValueError, match="param"):
    offline.offline_dpo(env, data, param="linear")
