"""Offline GSHF (Algorithm 1, Theorem 3.1) and offline DPO / pessimistic DPO baselines (Eq. (9), (10)).

All functions are pure functions of (env, data, hyper-parameters); `option` and `param` are static, so
jit with `static_argnames` and vmap over seeds.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

import gshf_jax as g
from bandit_sim import env as bandit

OPTIONS = ("mle", "I", "II")


class OfflineFit(NamedTuple):
  """What Algorithm 1 computes from D_off before choosing a policy."""
  theta_mle: jax.Array  # [d], Eq. (3) over ||theta|| <= B
  cov: jax.Array  # [d, d] Sigma_off = lam I + sum dphi dphi^T (Section 2.3)
  nu: jax.Array  # [d] reference vector


def reference_vector(env):
  """nu = E_{x ~ d0}[phi(x, pi0)], the default reference vector of Theorem 3.1, [d]."""
  return env.context_probs @ bandit.expected_features(env, env.ref_logp)


def fit_offline(env, data, *, lam, nu=None, mask=None):
  """theta_MLE (Eq. (3)), Sigma_off and nu for a dataset (rows with mask 0 left out)."""
  dphi = bandit.feature_differences(env, data)
  theta = g.bt_mle(dphi, data.y, env.bound, mask)
  return OfflineFit(theta, g.covariance(dphi, lam, mask), reference_vector(env) if nu is None else nu)


def uncertainty_bonus(env, fit):
  """Option II's Gamma(x, a, nu, D_off) = ||phi(x, a) - nu||_{Sigma_off^{-1}}, [X, K]."""
  return g.elliptical_norm(env.features - fit.nu, fit.cov)


def _safe_elliptical_norm(v, cov):
  """||v||_{Sigma^{-1}} with gradient 0 (a valid subgradient) at v = 0 instead of NaN."""
  q = v @ jnp.linalg.solve(cov, v)
  return jnp.sqrt(jnp.maximum(q, jnp.finfo(q.dtype).tiny))


def expected_uncertainty(env, logp, fit):
  """Option I's Gamma_e(pi, nu, D_off) = ||E_{x ~ d0}[phi(x, pi)] - nu||_{Sigma_off^{-1}}."""
  mean_feature = env.context_probs @ bandit.expected_features(env, logp)
  return _safe_elliptical_norm(mean_feature - fit.nu, fit.cov)


def gibbs_class_logp(env, theta):
  """pi_theta ∝ pi0 exp(<theta, phi> / eta), the policy class Pi of Definition 2.2, [X, K]."""
  return g.gibbs_logprobs(env.ref_logp, bandit.rewards(env, theta), env.eta)


def option_one_objective(env, theta, fit, beta):
  """Eq. (5) at pi_theta: E_{d0, pi}[r_MLE] - beta Gamma_e(pi) - eta E_{d0} KL(pi || pi0)."""
  logp = gibbs_class_logp(env, theta)
  per_context = g.regularized_value(logp, env.ref_logp, bandit.rewards(env, fit.theta_mle), env.eta)
  return env.context_probs @ per_context - beta * expected_uncertainty(env, logp, fit)


class OptionOneResult(NamedTuple):
  theta: jax.Array  # [d] the best start's final iterate
  objective: jax.Array  # Eq. (5) there
  stationarity: jax.Array  # ||theta - P_B(theta + grad)|| there
  num_iterations: jax.Array  # per start


def solve_option_one(env, fit, beta, *, max_iter=150, tol=1e-9):
  """Maximize Eq. (5) over ||theta|| <= B by projected gradient ascent with backtracking.

  Eq. (5) is concave in pi but not in theta, so three starts run in parallel (theta = 0, i.e. pi0;
  theta_MLE, the plug-in; and theta_MLE moved by the worst-case shift of the uncertainty term) and the
  best final objective wins. Each run: step s doubles after an accepted step and halves until
  the sufficient-ascent test F(theta+) >= F(theta) + g.(theta+ - theta) - |theta+ - theta|^2 / (2 s)
  holds; it stops when the projected-gradient stationarity ||theta - P_B(theta + grad F)|| <= tol, or
  the step no longer changes F (|dF| <= 1e-14 |F|), or after max_iter steps. The returned stationarity
  certifies the result only where F is smooth: F has a kink where E phi(pi) = nu, and for large beta
  the maximizer sits on it (the gradient measure then stays large although no ascent step exists).
  """
  objective = lambda theta: option_one_objective(env, theta, fit, beta)
  value_and_grad = jax.value_and_grad(objective)
  project = lambda theta: optax.projections.projection_l2_ball(theta, env.bound)

  def stationarity(theta, grad):
    return jnp.linalg.norm(theta - project(theta + grad))

  def run(theta0):
    def body(state):
      theta, step, f, grad, it, _, _ = state

      def shrink(s):
        return s * 0.5

      def insufficient(s):
        new = project(theta + s * grad)
        d = new - theta
        return (objective(new) < f + grad @ d - d @ d / (2 * s)) & (s > 1e-12)

      step = jax.lax.while_loop(insufficient, shrink, step)
      new = project(theta + step * grad)
      new_f, new_grad = value_and_grad(new)
      stalled = jnp.abs(new_f - f) <= 1e-14 * jnp.maximum(1.0, jnp.abs(f))
      return new, 2 * step, new_f, new_grad, it + 1, stationarity(new, new_grad), stalled

    def keep_going(state):
      _, _, _, _, it, stat, stalled = state
      return (stat > tol) & (it < max_iter) & ~stalled

    f0, g0 = value_and_grad(theta0)
    init = (theta0, jnp.ones((), theta0.dtype), f0, g0, jnp.int32(0), stationarity(theta0, g0), False)
    theta, _, f, _, it, stat, _ = jax.lax.while_loop(keep_going, body, init)
    return theta, f, stat, it

  # Third start: theta_MLE shifted by the worst-case u = beta Sigma^{-1} v / ||v||_{Sigma^{-1}} of the
  # dual form beta ||v||_{Sigma^{-1}} = max_{||u||_Sigma <= beta} u.v, at v = E phi(pi_MLE) - nu.
  v = env.context_probs @ bandit.expected_features(env, gibbs_class_logp(env, fit.theta_mle)) - fit.nu
  shift = beta * jnp.linalg.solve(fit.cov, v) / _safe_elliptical_norm(v, fit.cov)
  starts = jnp.stack([jnp.zeros_like(fit.theta_mle), fit.theta_mle, project(fit.theta_mle - shift)])
  thetas, values, stats, iters = jax.vmap(run)(starts)
  best = jnp.argmax(values)
  return OptionOneResult(thetas[best], values[best], stats[best], iters)


def offline_gshf(env, data, *, option, beta, lam, nu=None, mask=None):
  """Algorithm 1 (offline GSHF). Returns the output policy's logp [X, K].

  option "II": Gibbs policy (Definition 2.2) of r_MLE - beta * Gamma, Gamma(x, a) = ||phi(x, a) -
    nu||_{Sigma_off^{-1}}; "I": argmax of Eq. (5) over the Gibbs class (solve_option_one); "mle": the
    Gibbs policy of r_MLE, no pessimism. nu defaults to E_{d0}[phi(x, pi0)]; `mask` [n] drops rows.
  """
  return policy_from_fit(env, fit_offline(env, data, lam=lam, nu=nu, mask=mask), option=option, beta=beta)


def policy_from_fit(env, fit, *, option, beta):
  """The output policy of Algorithm 1 for a given OfflineFit (see offline_gshf)."""
  if option not in OPTIONS:
    raise ValueError(f"option must be one of {OPTIONS}, got {option!r}")
  r_mle = bandit.rewards(env, fit.theta_mle)
  if option == "mle":
    return g.gibbs_logprobs(env.ref_logp, r_mle, env.eta)
  if option == "II":
    return g.gibbs_logprobs(env.ref_logp, r_mle - beta * uncertainty_bonus(env, fit), env.eta)
  return gibbs_class_logp(env, solve_option_one(env, fit, beta).theta)


def _chosen_rejected(data):
  won = data.y == 1
  return jnp.where(won, data.a1, data.a2), jnp.where(won, data.a2, data.a1)


def dpo_objective(env, logp, data, *, bonus=None, bonus_scale=0.0):
  """Mean DPO loss (Eq. (9)) of a policy on D_off, with KL coefficient eta; with `bonus` Gamma [X, K], the
  pessimistic DPO of Eq. (10) with margin bonus_scale * (Gamma(x, a_w) - Gamma(x, a_l))."""
  chosen, rejected = _chosen_rejected(data)
  ctx = data.ctx
  margin = 0.0 if bonus is None else bonus_scale * (bonus[ctx, chosen] - bonus[ctx, rejected])
  losses = g.dpo_loss(logp[ctx, chosen], logp[ctx, rejected], env.ref_logp[ctx, chosen],
                      env.ref_logp[ctx, rejected], env.eta, margin=margin)
  return jnp.mean(losses)


class DPOResult(NamedTuple):
  logp: jax.Array  # [X, K] the trained policy
  loss: jax.Array  # final mean loss
  grad_norm: jax.Array  # final gradient norm (projected for the Gibbs class)


def offline_dpo(env, data, *, param="gibbs", pessimism=0.0, lam=1.0, nu=None, steps=2000,
                learning_rate=0.05, init_logits=None):
  """Offline DPO (Eq. (9)) or, with pessimism = beta > 0, pessimistic DPO (Eq. (10)), full batch.

  param "gibbs": pi_theta ∝ pi0 exp(<theta, phi> / eta), ||theta|| <= B, by projected gradient descent;
    there Eq. (9) is exactly the BT negative log-likelihood in theta, so DPO recovers option "mle".
  param "tabular": one free logit per (x, a), initialized at log pi0 (or `init_logits`), by Adam with a
    cosine-decayed `learning_rate`; the loss only sees logit differences between compared actions, so
    uncovered actions keep their initial logits and receive whatever mass the normalization leaves them
    (Appendix E.1).
  The margin uses Gamma of Option II (Sigma_off with lam, reference vector nu).
  """
  if param not in ("gibbs", "tabular"):
    raise ValueError(f"param must be 'gibbs' or 'tabular', got {param!r}")
  bonus = uncertainty_bonus(env, fit_offline(env, data, lam=lam, nu=nu))
  if param == "gibbs":
    # Projected gradient descent with step 1/L: the mean loss has Hessian <= max ||dphi||^2 / 4 <= 1 in
    # theta. (Adam followed by a projection would not converge to the constrained optimum.)
    to_logp = lambda theta: gibbs_class_logp(env, theta)
    params = jnp.zeros(env.features.shape[-1], env.features.dtype)
    project = lambda theta: optax.projections.projection_l2_ball(theta, env.bound)
    opt = optax.sgd(1.0)
  else:
    to_logp = lambda logits: jax.nn.log_softmax(logits, axis=-1)
    params = env.ref_logp if init_logits is None else init_logits
    project = lambda logits: logits
    opt = optax.adam(optax.cosine_decay_schedule(learning_rate, steps))
  loss_fn = lambda p: dpo_objective(env, to_logp(p), data, bonus=bonus, bonus_scale=pessimism)

  def step(carry, _):
    p, state = carry
    grads = jax.grad(loss_fn)(p)
    updates, state = opt.update(grads, state, p)
    return (project(optax.apply_updates(p, updates)), state), None

  (params, _), _ = jax.lax.scan(step, (params, opt.init(params)), None, length=steps)
  loss, grads = jax.value_and_grad(loss_fn)(params)
  grad_norm = jnp.linalg.norm(params - project(params - grads)) if param == "gibbs" else jnp.linalg.norm(grads)
  return DPOResult(to_logp(params), loss, grad_norm)
