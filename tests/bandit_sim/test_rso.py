"""RSO / multi-step RSO on the bandit and Appendix E.1's population DPO, against plain NumPy
transcriptions, closed forms and Monte Carlo."""

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gshf_jax as g
from bandit_sim import env as bandit
from bandit_sim import offline, rso
from bandit_sim.experiments._common import ENV, behaviour_policy


@pytest.fixture(scope="module")
def instance():
  env = bandit.make_linear_bandit(jax.random.key(0), num_contexts=4, num_actions=6, dim=3, bound=1.0, eta=0.1)
  return env, bandit.rewards(env, env.theta_star)


def test_step_coefficients_and_path_targets():
  np.testing.assert_allclose(rso.step_coefficients(jnp.array([0.5, 0.3, 0.1])), [0.5, 0.75, 0.15], rtol=1e-12)
  np.testing.assert_allclose(rso.step_coefficients(g.multistep_etas(0.1, 4)), [0.4] * 4, rtol=1e-6)
  with pytest.raises(ValueError, match="decrease"):
    rso.step_coefficients(jnp.array([0.1, 0.3]))


def test_multistep_acceptance_against_numpy_and_product_rule(instance):
  env, r = instance
  ref, reward = np.asarray(env.ref_logp), np.asarray(r)
  path = [0.5, 0.3, 0.1]
  got = np.asarray(rso.multistep_acceptance(env.ref_logp, r, jnp.array(path)))
  inv_prev = 0.0
  for i, eta in enumerate(path):
    proposal = np.exp(ref + reward * inv_prev)
    proposal /= proposal.sum(-1, keepdims=True)
    coef = 1 / (1 / eta - inv_prev)
    expected = (proposal * np.exp((reward - reward.max(-1, keepdims=True)) / coef)).sum(-1)
    np.testing.assert_allclose(got[i], expected, rtol=1e-12)
    inv_prev = 1 / eta
  # The steps multiply to the one-step acceptance towards the last target.
  np.testing.assert_allclose(got.prod(0), g.acceptance_rate(env.ref_logp, r, 0.1), rtol=1e-12)


def test_multistep_acceptance_bound_with_mean_gap(instance):
  """Appendix E.2 with r_x = max r - E_pi0 r: N = ceil(r_x / eta) + 1 steps accept >= exp(-1) each."""
  env, r = instance
  for x in range(r.shape[0]):
    gap = float(jnp.max(r[x]) - jnp.exp(env.ref_logp[x]) @ r[x])
    n = math.ceil(gap / 0.1) + 1
    steps = rso.multistep_acceptance(env.ref_logp[x], r[x], g.multistep_etas(0.1, n))
    assert float(jnp.min(steps)) >= math.exp(-1)


def test_rso_dataset_pairs_are_rejection_samples_of_the_proposal(instance):
  env, r = instance
  ctx = jnp.array([0, 1, 2, 3, 0])
  pairs = rso.rso_dataset(jax.random.key(1), env.ref_logp, r, 0.5, ctx, num_candidates=8, num_pairs=2)
  assert pairs.ctx.shape == (10,) and np.all(np.asarray(pairs.y) == 1)
  np.testing.assert_array_equal(pairs.ctx, np.repeat(np.asarray(ctx), 2))
  assert np.all(np.asarray(r[pairs.ctx, pairs.a1]) >= np.asarray(r[pairs.ctx, pairs.a2]))  # chosen = higher reward
  with pytest.raises(ValueError, match="num_pairs"):
    rso.rso_dataset(jax.random.key(1), env.ref_logp, r, 0.5, ctx, num_candidates=3, num_pairs=2)


def test_accepted_law_with_many_candidates_approaches_the_target(instance):
  """With K large the accepted samples follow pi0 exp(r / coef) (RSO is exact in the limit); with K = 2
  and coef -> 0 they are the best of two draws from pi0 (exact best-of-2)."""
  env, r = instance
  law = rso.accepted_law(jax.random.key(2), env.ref_logp, r, 0.5, num_candidates=256, num_accepted=1, draws=4000)
  target = jnp.exp(g.gibbs_logprobs(env.ref_logp, r, 0.5))
  assert float(jnp.max(rso.total_variation(law, target))) < 0.04
  greedy = rso.accepted_law(jax.random.key(3), env.ref_logp, r, 1e-6, num_candidates=2, num_accepted=1, draws=20000)
  best_of_2 = jnp.exp(g.best_of_n_logprobs(env.ref_logp, r, 2))
  assert float(jnp.max(rso.total_variation(greedy, best_of_2))) < 0.02


def test_multistep_rso_steps_and_rso_special_case(instance):
  env, r = instance
  run = rso.multistep_rso(jax.random.key(4), env, r, num_prompts=30, steps=50)
  assert run.step_logp.shape == (3, 4, 6) and run.pairs.ctx.shape == (30,)
  np.testing.assert_allclose(jnp.exp(run.logp).sum(-1), 1.0, atol=1e-12)
  np.testing.assert_array_equal(run.logp, run.step_logp[-1])
  # Step 1 is RSO from pi0: the same key gives the same pairs and policy as a one-step path.
  one = rso.multistep_rso(jax.random.key(4), env, r, num_prompts=10, eta_path=(0.5,), steps=50)
  assert one.step_logp.shape == (1, 4, 6)
  # Training moves mass towards the proxy reward's preferred actions.
  assert float(g.gibbs.expectation(run.logp, r).mean()) > float(g.gibbs.expectation(env.ref_logp, r).mean())
  with pytest.raises(ValueError, match="num_prompts"):
    rso.multistep_rso(jax.random.key(4), env, r, num_prompts=2, steps=5)
  with pytest.raises(ValueError, match="coef"):
    rso.multistep_rso(jax.random.key(4), env, r, num_prompts=6, coef=-1.0, steps=5)


def test_sft_converges_to_the_empirical_chosen_frequencies(instance):
  env, _ = instance
  data = bandit.Preferences(jnp.array([0, 0, 0, 1]), jnp.array([1, 2, 1, 3]), jnp.array([0, 0, 4, 0]),
                            jnp.array([1, 1, 0, 1]))
  logp = rso.sft(env, data, steps=3000, learning_rate=0.1)
  p = np.exp(np.asarray(logp))
  # Context 0 chose 1, 2, 4 once each; context 1 chose 3. Unseen contexts keep pi0.
  np.testing.assert_allclose(p[0, [1, 2, 4]] / p[0, [1, 2, 4]].sum(), [1 / 3] * 3, atol=1e-3)
  assert p[0, [1, 2, 4]].sum() > 0.97 and p[1, 3] > 0.97
  np.testing.assert_allclose(logp[2:], env.ref_logp[2:], atol=1e-12)


def _numpy_population_loss(env, logits, behaviour_logp, bonus, scale):
  logp = np.asarray(jax.nn.log_softmax(logits, -1))
  ref, beh, gamma = np.asarray(env.ref_logp), np.exp(np.asarray(behaviour_logp)), np.asarray(bonus)
  r = np.asarray(bandit.rewards(env, env.theta_star))
  total = 0.0
  for x in range(ref.shape[0]):
    for a1, a2 in itertools.product(range(ref.shape[1]), repeat=2):
      w = beh[x, a1] * beh[x, a2]
      if w == 0:
        continue
      p = 1 / (1 + np.exp(-(r[x, a1] - r[x, a2])))
      z = float(env.eta) * ((logp[x, a1] - ref[x, a1]) - (logp[x, a2] - ref[x, a2])) + scale * (gamma[x, a1] - gamma[x, a2])
      total += float(env.context_probs[x]) * w * (p * np.log1p(np.exp(-z)) + (1 - p) * np.log1p(np.exp(z)))
  return total


@pytest.mark.parametrize("case", [0, 2])
def test_population_dpo_loss_minimum_and_minimizers(case):
  env = bandit.make_linear_bandit(jax.random.key(5), **ENV)
  behaviour = behaviour_policy(env, case)
  bonus = offline.uncertainty_bonus(env, jnp.eye(ENV["dim"]) * 3.0, jnp.zeros(ENV["dim"]))
  logits = jax.random.normal(jax.random.key(6), env.ref_logp.shape)
  for scale in (0.0, 0.7):
    got = offline.population_dpo_loss(env, logits, behaviour, bonus=bonus, bonus_scale=scale)
    assert float(got) == pytest.approx(_numpy_population_loss(env, logits, behaviour, bonus, scale), rel=1e-10)
    minimum = offline.population_dpo_minimum(env, behaviour)
    for uncovered in (env.ref_logp, logits):  # any logits on Omega_x give a minimizer
      member = offline.population_dpo_minimizer(env, behaviour, uncovered, bonus=bonus, bonus_scale=scale)
      assert float(offline.population_dpo_loss(env, member, behaviour, bonus=bonus, bonus_scale=scale)) == \
          pytest.approx(float(minimum), abs=1e-12)
    assert float(got) > float(minimum)
    fitted = offline.fit_population_dpo(env, behaviour, logits, bonus=bonus, bonus_scale=scale)
    assert float(offline.population_dpo_loss(env, fitted, behaviour, bonus=bonus, bonus_scale=scale) - minimum) < 1e-10
    covered = behaviour > -jnp.inf
    if case == 0:  # full coverage: the unique optimum is pi* (Option II's policy with the bonus)
      target = g.gibbs_logprobs(env.ref_logp, bandit.rewards(env, env.theta_star) - scale * bonus, env.eta)
      np.testing.assert_allclose(jnp.exp(fitted), jnp.exp(target), atol=1e-6)
    else:  # uncovered logits never move: their values stay the initialization's
      shift = np.where(np.asarray(covered), np.nan, np.asarray(fitted - logits))  # = -log Z(x) on Omega_x
      assert np.nanmax(np.nanmax(shift, -1) - np.nanmin(shift, -1)) < 1e-9
