"""Offline learning with pseudo-labels on the bandit (Appendix E.2, Appendix H): SFT on the preferred
responses, RSO and multi-step RSO, and the exact acceptance of rejection sampling along a KL path.

The policies here are tabular (one free logit per (x, a)), as an LLM is: the preference losses only see
the actions a dataset shows. The proxy reward of RSO is the linear r_MLE fitted on D_off (Eq. (3)); the
human preference budget is D_off alone, every later label is a pseudo-label from r_MLE.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

import gshf_jax as g
from bandit_sim import env as bandit
from bandit_sim import offline
from gshf_jax import _checks


def step_coefficients(eta_path):
  """Rejection-sampling coefficients of a KL path eta_1 > ... > eta_N (Appendix E.2).

  Step i proposes from pi0 exp(r / eta_{i-1}) (pi0 for i = 1) and targets pi0 exp(r / eta_i), a tilt
  by r * (1/eta_i - 1/eta_{i-1}), so its coefficient is 1 / (1/eta_i - 1/eta_{i-1}). For the path
  multistep_etas(eta, N) every coefficient is N * eta.

  Args:
    eta_path: [N] strictly decreasing KL coefficients > 0.

  Returns:
    [N] coefficients.
  """
  eta_path = jnp.asarray(eta_path)
  _checks.check_shape("eta_path", eta_path, (None,))
  _checks.check_positive("eta_path", eta_path)
  inverse = 1.0 / eta_path
  steps = jnp.diff(inverse, prepend=0.0)
  _checks.check_positive("eta_path's increments of 1/eta (the path must decrease)", steps)
  return 1.0 / steps


def multistep_acceptance(ref_logp, reward, eta_path):
  """Exact acceptance of each step of multi-step rejection sampling (Appendix E.2, Figure 3).

  Step i draws from pi_{i-1} = pi0 exp(r / eta_{i-1}) and accepts with probability
  exp((r - max r) / c_i), c_i = step_coefficients(eta_path)[i]; its acceptance is
  gshf_jax.acceptance_rate(log pi_{i-1}, r, c_i). The product over steps is the one-step acceptance
  E_{pi0} exp((r - max r) / eta_N).

  Args:
    ref_logp: [..., K] log pi0.
    reward: [..., K].
    eta_path: [N] decreasing coefficients, e.g. gshf_jax.multistep_etas(eta, N) or (0.5, 0.3, 0.1).

  Returns:
    [N, ...] acceptance probabilities.
  """
  coefs = step_coefficients(eta_path)
  previous = jnp.concatenate([jnp.full((1,), jnp.inf, coefs.dtype), jnp.asarray(eta_path)[:-1]])
  proposal = lambda eta: jax.nn.log_softmax(ref_logp + jnp.where(jnp.isinf(eta), 0.0, reward / eta), -1)
  return jax.vmap(lambda eta, c: g.acceptance_rate(proposal(eta), reward, c))(previous, coefs)


def rso_dataset(key, proposal_logp, proxy_reward, coef, ctx, *, num_candidates, num_pairs):
  """Appendix H's RSO pairs for each prompt: K candidates from the proposal, gshf_jax.rso_pairs with the
  sampling coefficient, chosen = higher proxy reward (a pseudo-label, no human query).

  Args:
    key: PRNG key.
    proposal_logp: [X, K_actions] the policy the candidates are drawn from.
    proxy_reward: [X, K_actions] r_MLE.
    coef: rejection-sampling coefficient > 0.
    ctx: [n] prompts.
    num_candidates, num_pairs: static, 2 * num_pairs <= num_candidates (Table 8: 8 - 2 is one pair).

  Returns:
    Preferences with n * num_pairs rows, a1 = chosen, a2 = rejected, y = 1.
  """
  _checks.check_positive_int("num_candidates", num_candidates)
  _checks.check_positive_int("num_pairs", num_pairs)
  if 2 * num_pairs > num_candidates:
    raise ValueError(f"2 * num_pairs = {2 * num_pairs} exceeds num_candidates = {num_candidates}")

  def one_prompt(key, x):
    k_cand, k_rs = jax.random.split(key)
    candidates = jax.random.categorical(k_cand, proposal_logp[x], shape=(num_candidates,))
    chosen, rejected = g.rso_pairs(k_rs, proxy_reward[x, candidates], coef, num_pairs)
    return candidates[chosen], candidates[rejected]

  chosen, rejected = jax.vmap(one_prompt)(jax.random.split(key, ctx.shape[0]), ctx)
  as_int = lambda v: v.reshape(-1).astype(jnp.int32)
  ctx = jnp.repeat(ctx, num_pairs)
  return bandit.Preferences(as_int(ctx), as_int(chosen), as_int(rejected), jnp.ones_like(as_int(ctx)))


def accepted_law(key, proposal_logp, proxy_reward, coef, *, num_candidates, num_accepted, draws):
  """Monte Carlo law of the samples RSO accepts (gshf_jax.rso_rejection_sample) per context.

  For every context, `draws` independent pools of K candidates from the proposal; each pool yields
  num_accepted samples; returns their empirical distribution [X, K_actions]. With a small pool and low
  acceptance the sampler falls back to the best candidates of the pool (the maximum is always
  accepted), so the law departs from the target pi_proposal exp(r / coef) (Appendix E.2).
  """
  _checks.check_positive_int("draws", draws)
  num_contexts, num_actions = proposal_logp.shape

  def one_pool(key, x):
    k_cand, k_rs = jax.random.split(key)  # inverse-CDF draws: far cheaper than Gumbel-max for many pools
    candidates = jax.random.choice(k_cand, num_actions, (num_candidates,), p=jnp.exp(proposal_logp[x]))
    return candidates[g.rso_rejection_sample(k_rs, proxy_reward[x, candidates], coef, num_accepted)]

  keys = jax.random.split(key, (num_contexts, draws))
  ctx = jnp.broadcast_to(jnp.arange(num_contexts)[:, None], (num_contexts, draws))
  samples = jax.vmap(jax.vmap(one_pool))(keys, ctx)  # [X, draws, num_accepted]
  counts = jax.vmap(lambda s: jnp.bincount(s.reshape(-1), length=num_actions))(samples)
  return counts / (draws * num_accepted)


def total_variation(p, q):
  """(1/2) sum_a |p(a) - q(a)| on the last axis, for probabilities p, q."""
  return 0.5 * jnp.sum(jnp.abs(p - q), axis=-1)


def sft(env, data, *, steps=2000, learning_rate=0.05):
  """SFT on the preferred responses (Table 1's "SFT" row): Adam on -mean log pi(a_w | x), tabular,
  initialized at log pi0, cosine-decayed learning rate. Returns logp [X, K]."""
  bandit.check_preferences(env, data)
  chosen = jnp.where(data.y == 1, data.a1, data.a2)
  loss_fn = lambda logits: -jnp.mean(jax.nn.log_softmax(logits, -1)[data.ctx, chosen])
  logits = offline.minimize(loss_fn, env.ref_logp, optax.adam(offline.cosine_decay(learning_rate, steps)), steps)
  return jax.nn.log_softmax(logits, -1)


class RSOResult(NamedTuple):
  logp: jax.Array  # [X, K] the final policy
  step_logp: jax.Array  # [N, X, K] the policy after each step (N = 1 for RSO)
  pairs: bandit.Preferences  # every pseudo-labelled pair, steps concatenated
  duplicate_fraction: jax.Array  # share of pairs whose two responses are the same action (no signal)


def multistep_rso(key, env, proxy_reward, *, num_prompts, eta_path=(0.5, 0.3, 0.1), coef="path",
                  num_candidates=8, num_pairs=1, loss="dpo", steps=2000, learning_rate=0.05):
  """Multi-step RSO (Appendix E.2, Appendix H, Table 8); with a one-element path, RSO (Liu et al. 2023).

  Step i of N = len(eta_path): num_prompts // N fresh prompts x ~ d0; candidates from the previous
  step's policy (pi0 at step 1); rso_dataset with the proxy reward; the policy, initialized at the
  previous step's, is trained on this step's pairs by the DPO (or hinge) loss with reference pi0 and KL
  coefficient eta_i, whose population optimum is pi0 exp(r / eta_i), the path's i-th target.

  Args:
    key: PRNG key.
    env: LinearBandit (its eta is not used; eta_path sets each step's).
    proxy_reward: [X, K] the reward that labels and rejection-samples (r_MLE on D_off).
    num_prompts: prompts over all steps, static, >= N.
    eta_path: static tuple of decreasing KL coefficients; RSO is (eta,).
    coef: rejection-sampling coefficient per step: "path" for step_coefficients(eta_path) (step i targets
      pi0 exp(r / eta_i) from pi0 exp(r / eta_{i-1})), or one number for every step (Table 8: 0.5 for
      RSO, 3 for multi-step RSO).
    num_candidates, num_pairs: Table 8's "candidates and accepted samples" 8 - 2 is (8, 1).
    loss: "dpo" or "hinge".
    steps, learning_rate: Adam per step (cosine decay), as offline.offline_dpo's tabular policy.

  Returns:
    RSOResult.
  """
  num_steps = len(eta_path)
  _checks.check_positive_int("num_prompts", num_prompts)
  if num_prompts < num_steps:
    raise ValueError(f"num_prompts = {num_prompts} must be >= the path's {num_steps} steps")
  coefs = step_coefficients(eta_path) if isinstance(coef, str) and coef == "path" else None
  if coefs is None:
    _checks.check_positive("coef", coef)
    coefs = jnp.full((num_steps,), coef, proxy_reward.dtype)
  logits, step_logp, all_pairs = env.ref_logp, [], []
  for i, (eta_i, key_i) in enumerate(zip(eta_path, jax.random.split(key, num_steps))):
    k_ctx, k_pairs = jax.random.split(key_i)
    ctx = jax.random.categorical(k_ctx, jnp.log(env.context_probs), shape=(num_prompts // num_steps,))
    pairs = rso_dataset(k_pairs, jax.nn.log_softmax(logits, -1), proxy_reward, coefs[i], ctx,
                        num_candidates=num_candidates, num_pairs=num_pairs)
    logits = offline.offline_dpo(env._replace(eta=jnp.asarray(eta_i, env.eta.dtype)), pairs, param="tabular",
                                 steps=steps, learning_rate=learning_rate, init_logits=logits, loss=loss).logp
    step_logp.append(logits)
    all_pairs.append(pairs)
  pairs = jax.tree.map(lambda *parts: jnp.concatenate(parts), *all_pairs)
  return RSOResult(logits, jnp.stack(step_logp), pairs, jnp.mean(pairs.a1 == pairs.a2))
