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
from gshf_jax import _checks, ball

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


def uncertainty_bonus(env, cov, nu):
  """Option II's Gamma(x, a, nu, D_off) = ||phi(x, a) - nu||_{Sigma_off^{-1}}, [X, K]."""
  return g.elliptical_norm(env.features - nu, cov)


def expected_uncertainty(env, logp, fit):
  """Option I's Gamma_e(pi, nu, D_off) = ||E_{x ~ d0}[phi(x, pi)] - nu||_{Sigma_off^{-1}}."""
  mean_feature = env.context_probs @ bandit.expected_features(env, logp)
  return g.elliptical_norm(mean_feature - fit.nu, fit.cov)


def gibbs_class_logp(env, theta):
  """pi_theta ∝ pi0 exp(<theta, phi> / eta), the policy class Pi of Definition 2.2, [X, K]."""
  return g.gibbs_logprobs(env.ref_logp, bandit.rewards(env, theta), env.eta)


def option_one_objective(env, theta, fit, beta):
  """Eq. (5) at pi_theta: E_{d0, pi}[r_MLE] - beta Gamma_e(pi) - eta E_{d0} KL(pi || pi0)."""
  logp = gibbs_class_logp(env, theta)
  per_context = g.regularized_value(logp, env.ref_logp, bandit.rewards(env, fit.theta_mle), env.eta)
  return env.context_probs @ per_context - beta * expected_uncertainty(env, logp, fit)


class OptionOneResult(NamedTuple):
  theta: jax.Array  # [d] the returned parameter, ||theta|| <= B
  objective: jax.Array  # Eq. (5) at pi_theta
  dual_bound: jax.Array  # min of the dual: >= Eq. (5) at every policy, so dual_bound - objective
  #                        bounds how far the returned theta is from optimal
  from_dual: jax.Array  # True when the dual's maximizer lies in the class (then it is the answer)


def option_one_dual(env, fit, beta, *, tol=None, max_iter=100):
  """The convex dual of Eq. (5) over all policies.

  With beta ||v||_{Sigma^{-1}} = max_{||u||_Sigma <= beta} u.v (v = E_{d0} phi(x, pi) - nu), Eq. (5) is
  max_pi min_u L(pi, u), L = E_{d0}[E_pi(r_MLE - u.(phi - nu)) - eta KL(pi || pi0)], concave in pi and
  linear in u, so (Sion's minimax theorem) its maximum over all policies equals
      min_{||u||_Sigma <= beta} G(u),  G(u) = E_{d0}[eta log sum_a pi0(a|x) exp((r_MLE - u.(phi - nu)) / eta)],
  attained by the Gibbs policy with theta = theta_MLE - u*. G is convex; with u = L^{-T} w (Sigma =
  L L^T) the constraint is the ball ||w|| <= beta, solved by gshf_jax.ball.minimize_in_ball.

  Returns:
    (theta_MLE - u*, G(u*), the BallResult of the solve).
  """
  chol = jnp.linalg.cholesky(fit.cov)
  to_u = lambda w: jax.scipy.linalg.solve_triangular(chol.T, w, lower=False)
  centered = env.features - fit.nu
  r_mle = bandit.rewards(env, fit.theta_mle)

  def dual(w):
    r = r_mle - centered @ to_u(w)
    return env.context_probs @ (env.eta * jax.nn.logsumexp(env.ref_logp + r / env.eta, axis=-1))

  radius = jnp.maximum(jnp.asarray(beta, fit.cov.dtype), jnp.finfo(fit.cov.dtype).tiny)
  result = ball.minimize_in_ball(dual, jnp.zeros_like(fit.theta_mle), radius, tol=tol, max_iter=max_iter)
  return fit.theta_mle - to_u(result.x), result.value, result


def _primal_ascent(env, fit, beta, starts, max_iter):
  """Projected gradient ascent on Eq. (5) in theta from each start; returns the best (theta, value)."""
  objective = lambda theta: option_one_objective(env, theta, fit, beta)
  value_and_grad = jax.value_and_grad(objective)
  project = lambda theta: optax.projections.projection_l2_ball(theta, env.bound)

  def run(theta0):
    def body(state):
      theta, step, f, grad, it, _ = state

      def insufficient(s):
        new = project(theta + s * grad)
        d = new - theta
        return (objective(new) < f + grad @ d - d @ d / (2 * s)) & (s > 1e-12)

      step = jax.lax.while_loop(insufficient, lambda s: 0.5 * s, step)
      new = project(theta + step * grad)
      new_f, new_grad = value_and_grad(new)
      stalled = jnp.abs(new_f - f) <= 1e-14 * jnp.maximum(1.0, jnp.abs(f))
      return new, 2 * step, new_f, new_grad, it + 1, stalled

    def keep_going(state):
      theta, _, _, grad, it, stalled = state
      return (jnp.linalg.norm(theta - project(theta + grad)) > 1e-9) & (it < max_iter) & ~stalled

    f0, g0 = value_and_grad(theta0)
    theta, _, f, _, _, _ = jax.lax.while_loop(
        keep_going, body, (theta0, jnp.ones((), theta0.dtype), f0, g0, jnp.int32(0), False))
    return theta, f

  thetas, values = jax.vmap(run)(starts)
  best = jnp.argmax(values)
  return thetas[best], values[best]


def solve_option_one(env, fit, beta, *, max_iter=100):
  """argmax of Eq. (5) over the Gibbs class {pi_theta : ||theta|| <= B}, with a certificate.

  First the convex dual (option_one_dual): its Gibbs parameter theta_MLE - u* maximizes Eq. (5) over
  *all* policies, so when ||theta_MLE - u*|| <= B it is the exact answer (also when the maximizer sits
  on the kink of Eq. (5) where E phi(pi) = nu). Otherwise projected gradient ascent in theta with
  backtracking runs from theta = 0, theta_MLE and the projection of the dual's theta, and the best
  wins. Either way `dual_bound - objective` >= 0 bounds the optimality gap (weak duality).
  """
  theta_dual, dual_value, _ = option_one_dual(env, fit, beta)
  project = lambda theta: optax.projections.projection_l2_ball(theta, env.bound)
  in_class = jnp.linalg.norm(theta_dual) <= env.bound * (1 + 1e-12)
  starts = jnp.stack([jnp.zeros_like(fit.theta_mle), fit.theta_mle, project(theta_dual)])
  theta_primal, _ = _primal_ascent(env, fit, beta, starts, max_iter)
  theta = jnp.where(in_class, theta_dual, theta_primal)
  return OptionOneResult(theta, option_one_objective(env, theta, fit, beta), dual_value, in_class)


def offline_gshf(env, data, *, option, beta, lam, nu=None, mask=None):
  """Algorithm 1 (offline GSHF). Returns the output policy's logp [X, K].

  option "II": Gibbs policy (Definition 2.2) of r_MLE - beta * Gamma, Gamma(x, a) = ||phi(x, a) -
    nu||_{Sigma_off^{-1}}; "I": argmax of Eq. (5) over the Gibbs class (solve_option_one); "mle": the
    Gibbs policy of r_MLE, no pessimism. nu defaults to E_{d0}[phi(x, pi0)]; `mask` [n] drops rows.
  `beta` is the confidence radius of Eq. (5) / (6) (how pessimistic), not a KL coefficient: the KL
  coefficient is env.eta.
  """
  _check_option_and_beta(option, beta)
  return policy_from_fit(env, fit_offline(env, data, lam=lam, nu=nu, mask=mask), option=option, beta=beta)


def _check_option_and_beta(option, beta):
  if option not in OPTIONS:
    raise ValueError(f"option must be one of {OPTIONS}, got {option!r}")
  _checks.check_in_range("beta", beta, 0.0, float("inf"))


def policy_from_fit(env, fit, *, option, beta):
  """The output policy of Algorithm 1 for a given OfflineFit (see offline_gshf)."""
  _check_option_and_beta(option, beta)
  r_mle = bandit.rewards(env, fit.theta_mle)
  if option == "mle":
    return g.gibbs_logprobs(env.ref_logp, r_mle, env.eta)
  if option == "II":
    return g.gibbs_logprobs(env.ref_logp, r_mle - beta * uncertainty_bonus(env, fit.cov, fit.nu), env.eta)
  return gibbs_class_logp(env, solve_option_one(env, fit, beta).theta)


def _chosen_rejected(data):
  won = data.y == 1
  return jnp.where(won, data.a1, data.a2), jnp.where(won, data.a2, data.a1)


def dpo_objective(env, logp, data, *, bonus=None, bonus_scale=0.0, loss="dpo"):
  """Mean DPO loss (Eq. (9)) of a policy on D_off, with KL coefficient eta; with `bonus` Gamma [X, K], the
  pessimistic DPO of Eq. (10) with margin bonus_scale * (Gamma(x, a_w) - Gamma(x, a_l)). loss="hinge"
  is RSO's relu(1 - z) on the same z."""
  bandit.check_preferences(env, data)
  chosen, rejected = _chosen_rejected(data)
  ctx = data.ctx
  margin = None if bonus is None else bonus_scale * (bonus[ctx, chosen] - bonus[ctx, rejected])
  losses = g.pairwise_loss(loss)(logp[ctx, chosen], logp[ctx, rejected], env.ref_logp[ctx, chosen],
                                   env.ref_logp[ctx, rejected], env.eta, margin=margin)
  return jnp.mean(losses)


def minimize(loss_fn, params, optimizer, steps, project=lambda p: p):
  """`steps` full-batch optax steps on loss_fn, each followed by `project`; returns the final params.
  `steps` may be traced (one compilation serves every training length)."""

  def step(_, carry):
    p, state = carry
    updates, state = optimizer.update(jax.grad(loss_fn)(p), state, p)
    return project(optax.apply_updates(p, updates)), state

  params, _ = jax.lax.fori_loop(0, steps, step, (params, optimizer.init(params)))
  return params


def cosine_decay(learning_rate, steps):
  """optax.cosine_decay_schedule(learning_rate, steps) for a `steps` that may be traced:
  learning_rate * (1 + cos(pi * min(k, steps) / steps)) / 2 at step k."""
  return lambda count: learning_rate * (0.5 * (1 + jnp.cos(jnp.pi * jnp.minimum(count, steps) / steps)))


class DPOResult(NamedTuple):
  logp: jax.Array  # [X, K] the trained policy
  loss: jax.Array  # final mean loss
  grad_norm: jax.Array  # final gradient norm (projected for the Gibbs class)


def offline_dpo(env, data, *, param="gibbs", pessimism=0.0, lam=1.0, nu=None, steps=2000,
                learning_rate=0.05, init_logits=None, loss="dpo"):
  """Offline DPO (Eq. (9)) or, with pessimism = beta > 0, pessimistic DPO (Eq. (10)), full batch.

  param "gibbs": pi_theta ∝ pi0 exp(<theta, phi> / eta), ||theta|| <= B, by projected gradient descent;
    there Eq. (9) is exactly the BT negative log-likelihood in theta, so DPO recovers option "mle".
  param "matched": Proposition 5.1's class pi_theta ∝ pi0 exp((<theta, phi> - pessimism * Gamma) / eta),
    ||theta|| <= B, by projected gradient descent: Eq. (10)'s margin cancels the class's -pessimism * Gamma
    term, the loss is again the BT negative log-likelihood in theta, and pessimistic DPO recovers Option II
    (the Gibbs policy of r_MLE - beta * Gamma with beta = pessimism).
  param "tabular": one free logit per (x, a), initialized at log pi0 (or `init_logits`), by Adam with a
    cosine-decayed `learning_rate`; the loss only sees logit differences between compared actions, so
    uncovered actions keep their initial logits and receive whatever mass the normalization leaves them
    (Appendix E.1).
  The margin uses Gamma of Option II (Sigma_off with lam, reference vector nu). loss: a name in
  gshf_jax.PAIRWISE_LOSSES ("dpo", "hinge", ...).
  """
  if param not in ("gibbs", "matched", "tabular"):
    raise ValueError(f"param must be 'gibbs', 'matched' or 'tabular', got {param!r}")
  g.check_options(loss)
  # Gamma needs Sigma_off and nu only; no MLE is fitted.
  cov = g.covariance(bandit.feature_differences(env, data), lam)
  bonus = uncertainty_bonus(env, cov, reference_vector(env) if nu is None else nu)
  if param != "tabular":
    # Projected gradient descent with step 1/L: the mean loss has Hessian <= max ||dphi||^2 / 4 <= 1 in
    # theta. (Adam followed by a projection would not converge to the constrained optimum.)
    shift = pessimism * bonus if param == "matched" else 0.0
    to_logp = lambda theta: g.gibbs_logprobs(env.ref_logp, bandit.rewards(env, theta) - shift, env.eta)
    params = jnp.zeros(env.features.shape[-1], env.features.dtype)
    project = lambda theta: optax.projections.projection_l2_ball(theta, env.bound)
    opt = optax.sgd(1.0)
  else:
    to_logp = lambda logits: jax.nn.log_softmax(logits, axis=-1)
    params = env.ref_logp if init_logits is None else init_logits
    project = lambda logits: logits
    opt = optax.adam(cosine_decay(learning_rate, steps))
  if isinstance(pessimism, (int, float)) and pessimism == 0:
    bonus = None  # no margin at all, so losses without one (IPO) apply too
  loss_fn = lambda p: dpo_objective(env, to_logp(p), data, bonus=bonus, bonus_scale=pessimism, loss=loss)
  params = minimize(loss_fn, params, opt, steps, project)
  final_loss, grads = jax.value_and_grad(loss_fn)(params)
  grad_norm = jnp.linalg.norm(grads) if param == "tabular" else jnp.linalg.norm(params - project(params - grads))
  return DPOResult(to_logp(params), final_loss, grad_norm)


def population_dpo_loss(env, logits, behaviour_logp, *, bonus=None, bonus_scale=0.0):
  """Appendix E.1's population DPO loss L_inf (Eq. (9) with infinitely many pairs from pi_off):

    E_{x ~ d0} sum_{a1, a2} pi_off(a1|x) pi_off(a2|x) [p*(a1 > a2) l(a1, a2) + p*(a2 > a1) l(a2, a1)],

  l(a_w, a_l) = gshf_jax.dpo_loss of the tabular policy softmax(logits) with KL coefficient eta; with
  `bonus` Gamma [X, K], the margin bonus_scale * (Gamma(a_w) - Gamma(a_l)) of Eq. (10).

  Args:
    env: LinearBandit (p* is its BT oracle, Eq. (1)).
    logits: [X, K] the policy's logits.
    behaviour_logp: [X, K] log pi_off (-inf on actions D_off never shows).
    bonus, bonus_scale: optional pessimism.

  Returns:
    scalar loss.
  """
  logp = jax.nn.log_softmax(logits, -1)
  gamma = jnp.zeros_like(logp) if bonus is None else bonus
  pair = lambda v: (v[:, :, None], v[:, None, :])  # (a_w, a_l) = (row, column)
  margin = bonus_scale * (gamma[:, :, None] - gamma[:, None, :])
  loss = g.dpo_loss(*pair(logp), *pair(env.ref_logp), env.eta, margin=margin)  # [X, K, K], a_w = row
  reward = bandit.rewards(env, env.theta_star)
  p_star = jax.nn.sigmoid(reward[:, :, None] - reward[:, None, :])  # P(row > column)
  weight = jnp.exp(behaviour_logp[:, :, None] + behaviour_logp[:, None, :])
  # Both orders of each ordered pair are summed, so p*(a2 > a1) l(a2, a1) is the transposed term.
  per_context = jnp.sum(jnp.where(weight > 0, weight * (p_star * loss + jnp.swapaxes(p_star * loss, 1, 2)), 0.0),
                        axis=(1, 2))
  return env.context_probs @ per_context


def population_dpo_minimum(env, behaviour_logp):
  """The least value of population_dpo_loss (with or without the margin): sum of pi_off pi_off times the
  binary entropy of p*, reached exactly when the implicit reward matches r* (- bonus_scale * Gamma)
  up to a constant on pi_off's support (Lemma E.1)."""
  reward = bandit.rewards(env, env.theta_star)
  logit = reward[:, :, None] - reward[:, None, :]
  entropy = -jax.nn.sigmoid(logit) * jax.nn.log_sigmoid(logit) - jax.nn.sigmoid(-logit) * jax.nn.log_sigmoid(-logit)
  weight = jnp.exp(behaviour_logp[:, :, None] + behaviour_logp[:, None, :])
  return env.context_probs @ jnp.sum(jnp.where(weight > 0, weight * entropy, 0.0), axis=(1, 2))


def population_dpo_minimizer(env, behaviour_logp, uncovered_logits, *, bonus=None, bonus_scale=0.0):
  """One member of the minimizers of population_dpo_loss (Appendix E.1): on supp(pi_off) the logits are
  log pi0 + (r* - bonus_scale * Gamma) / eta, so pi ∝ pi* there (∝ the Option II policy with a bonus);
  on Omega_x = the actions outside supp(pi_off) they are `uncovered_logits`, arbitrary. Returns logp."""
  penalty = 0.0 if bonus is None else bonus_scale * bonus
  covered = env.ref_logp + (bandit.rewards(env, env.theta_star) - penalty) / env.eta
  return jax.nn.log_softmax(jnp.where(behaviour_logp > -jnp.inf, covered, uncovered_logits), -1)


def fit_population_dpo(env, behaviour_logp, init_logits, *, bonus=None, bonus_scale=0.0, max_iter=100,
                       tol=1e-9):
  """Minimizes population_dpo_loss over tabular logits by L-BFGS (optax) from `init_logits` [X, K],
  until the gradient norm is <= tol (1e-9 leaves a loss gap ~1e-15; L-BFGS's curvature pairs degenerate past that point) or max_iter.

  The loss never sees actions outside supp(pi_off): their gradient is 0, so their logits stay at the
  initialization and the mass they end up with depends on it alone (Appendix E.1). Returns logp.
  """
  _checks.check_positive_int("max_iter", max_iter)
  loss_fn = lambda logits: population_dpo_loss(env, logits, behaviour_logp, bonus=bonus, bonus_scale=bonus_scale)
  opt = optax.lbfgs()
  value_and_grad = optax.value_and_grad_from_state(loss_fn)

  def step(carry):
    logits, state, _, it = carry
    value, grad = value_and_grad(logits, state=state)
    updates, state = opt.update(grad, state, logits, value=value, grad=grad, value_fn=loss_fn)
    return optax.apply_updates(logits, updates), state, jnp.linalg.norm(grad), it + 1

  not_done = lambda carry: (carry[2] > tol) & (carry[3] < max_iter)
  init = (init_logits, opt.init(init_logits), jnp.asarray(jnp.inf, init_logits.dtype), jnp.int32(0))
  logits, _, _, _ = jax.lax.while_loop(not_done, step, init)
  return jax.nn.log_softmax(logits, -1)
