"""Nash learning from human feedback (NLHF) on the exact bandit: a general, possibly intransitive
preference oracle, its KL-regularized game, and offline and batch-online learning (Ye et al. 2024,
"Online Iterative RLHF with General Preference Model"; Munos et al. 2023).

The oracle: P*(x, a1, a2) = sigmoid(<theta*, psi(x, a1, a2)>) with the antisymmetric pair feature

  psi(x, a1, a2) = [ phi1 - phi2 ;  (phi1_i phi2_j - phi1_j phi2_i)_{i < j} ],  phi_k = phi(x, a_k),

a Bradley-Terry part (first d coordinates, r(a) = <w, phi(a)>) plus the bilinear part
phi1^T S phi2 with S antisymmetric (S = A - A^T for any A: only A's antisymmetric part matters), which
makes preferences intransitive. psi(a2, a1) = -psi(a1, a2), so P*(a1, a2) + P*(a2, a1) = 1, and
E_{a1 ~ pi1, a2 ~ pi2} psi = psi(phi(x, pi1), phi(x, pi2)) because psi is bilinear in (phi1, phi2) up to
the linear part. D = d + d(d - 1) / 2 parameters; B bounds ||theta*||.

The game (per context, averaged over x ~ d0): J(pi1, pi2) = pi1^T P* pi2 - eta KL(pi1 || pi0)
+ eta KL(pi2 || pi0), unique symmetric Nash equilibrium (pi*, pi*); a policy's suboptimality is its
duality gap max_{pi1} J(pi1, pi) - min_{pi2} J(pi, pi2) (gshf_jax.duality_gap).
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

import gshf_jax as g
from bandit_sim import env as bandit
from bandit_sim import online
from gshf_jax import _checks

Preferences = bandit.Preferences
SOLVERS = ("extragradient", "nash_md", "mirror_descent", "sppo")
ENHANCERS = ("uncertainty", "reference", "random_pairs", "offline")
# Lagrange weights kappa of the enhancer's penalized objective Gamma - kappa * eta * KL (as bandit_sim.online).
MULTIPLIERS = (0.25, 0.5, 1.0, 2.0)


class PreferenceBandit(NamedTuple):
  """P*(x, a1, a2) = sigmoid(<theta*, psi(x, a1, a2)>), pi0 = exp(ref_logp), contexts x ~ context_probs."""
  features: jax.Array  # [X, K, d], each ||phi(x, a)|| <= 1
  theta_star: jax.Array  # [D] = [w (d), s (d(d-1)/2)], ||theta*|| = bound
  ref_logp: jax.Array  # [X, K]
  context_probs: jax.Array  # [X]
  eta: jax.Array  # scalar
  bound: jax.Array  # scalar B


def pair_dim(dim):
  """D = d + d(d - 1) / 2, the length of psi."""
  return dim + dim * (dim - 1) // 2


def pair_features(phi1, phi2):
  """psi(phi1, phi2) = [phi1 - phi2; (phi1_i phi2_j - phi1_j phi2_i)_{i<j}], [..., D] (antisymmetric)."""
  i, j = jnp.triu_indices(phi1.shape[-1], k=1)
  bilinear = phi1[..., i] * phi2[..., j] - phi1[..., j] * phi2[..., i]
  return jnp.concatenate([phi1 - phi2, bilinear], axis=-1)


def all_pair_features(env):
  """psi(x, a1, a2) for every context and pair, [X, K, K, D]."""
  phi = env.features
  return pair_features(phi[:, :, None, :], phi[:, None, :, :])


def preference_matrix(env, theta):
  """P_theta(x, a1, a2) = sigmoid(<theta, psi(x, a1, a2)>), [X, K, K]; P + P^T = 1."""
  return jax.nn.sigmoid(all_pair_features(env) @ theta)


def bt_part(env, theta):
  """The Bradley-Terry coordinates w of theta = [w; s] (the reward r(a) = <w, phi(a)>), [d]."""
  return theta[:env.features.shape[-1]]


def make_preference_bandit(key, *, num_contexts, num_actions, dim, bound, eta, intransitivity=0.5,
                           ref_temperature=1.0, dtype=jnp.float64):
  """A random instance: features and pi0 as bandit_sim.make_linear_bandit; theta* = B [cos a w; sin a s]
  with w, s uniform unit directions and sin a = intransitivity (0: Bradley-Terry with r = <B w, phi>;
  1: purely bilinear, P*(a, a') = sigmoid(phi^T S phi'), no reward at all).

  Args:
    key: PRNG key.
    num_contexts, num_actions, dim: X, K, d (static ints; d >= 2).
    bound: B > 0.
    eta: KL coefficient > 0.
    intransitivity: in [0, 1], the share of ||theta*|| in the bilinear part.
    ref_temperature: > 0.
    dtype: float dtype.

  Returns:
    PreferenceBandit.
  """
  _checks.check_positive_int("dim", dim)
  if dim < 2:
    raise ValueError(f"dim must be >= 2 for the bilinear part of psi, got {dim}")
  _checks.check_in_range("intransitivity", intransitivity, 0.0, 1.0)
  k_lin, k_w, k_s = jax.random.split(key, 3)
  lin = bandit.make_linear_bandit(k_lin, num_contexts=num_contexts, num_actions=num_actions, dim=dim,
                                  bound=bound, eta=eta, ref_temperature=ref_temperature, dtype=dtype)
  unit = lambda v: v / jnp.linalg.norm(v)
  w = unit(jax.random.normal(k_w, (dim,), dtype))
  s = unit(jax.random.normal(k_s, (pair_dim(dim) - dim,), dtype))
  sin = jnp.asarray(intransitivity, dtype)
  theta = bound * jnp.concatenate([jnp.sqrt(1.0 - sin ** 2) * w, sin * s])
  return PreferenceBandit(lin.features, theta, lin.ref_logp, lin.context_probs, lin.eta, lin.bound)


# ---------------------------------------------------------------------------------------------------
# Exact game quantities.


def nash_policy(env, theta=None, *, tol=None):
  """The symmetric NE pi_theta ∝ pi0 exp(P_theta pi_theta / eta) of the game of P_theta (theta* by
  default), [X, K] (gshf_jax.nash_equilibrium)."""
  theta = env.theta_star if theta is None else theta
  logp, _ = g.nash_equilibrium(env.ref_logp, preference_matrix(env, theta), env.eta, tol=tol)
  return logp


def game_value(env, logp1, logp2):
  """J(pi1, pi2) in the true game, exact."""
  return g.game_value(logp1, logp2, env.ref_logp, preference_matrix(env, env.theta_star), env.eta,
                      context_probs=env.context_probs)


def duality_gap(env, logp):
  """max_{pi1} J(pi1, pi) - min_{pi2} J(pi, pi2) in the true game: the suboptimality of pi."""
  return g.duality_gap(logp, env.ref_logp, preference_matrix(env, env.theta_star), env.eta,
                       context_probs=env.context_probs)


def win_rate(env, logp1, logp2):
  """E_x E_{a1 ~ pi1, a2 ~ pi2} P*(x, a1, a2): how often pi1's response is preferred."""
  pref = preference_matrix(env, env.theta_star)
  per_context = jnp.einsum("xa,xab,xb->x", jnp.exp(logp1), pref, jnp.exp(logp2))
  return env.context_probs @ per_context


def as_linear_bandit(env, theta=None):
  """The linear bandit of the Bradley-Terry part w of theta (theta* by default): the reward-based view."""
  theta = env.theta_star if theta is None else theta
  w = bt_part(env, theta)
  return bandit.LinearBandit(env.features, w, env.ref_logp, env.context_probs, env.eta, jnp.linalg.norm(w))


# ---------------------------------------------------------------------------------------------------
# Data and estimation.


def collect_preferences(key, env, logp1, logp2, n, ctx=None):
  """n comparisons x ~ d0, a1 ~ pi1, a2 ~ pi2, y ~ Bernoulli(P*(x, a1, a2)); Preferences of [n] arrays."""
  pref = preference_matrix(env, env.theta_star)
  return bandit.sample_comparisons(key, env, logp1, logp2, n, ctx, lambda c, a1, a2: pref[c, a1, a2])


def data_pair_features(env, data):
  """psi_i = psi(x_i, a1_i, a2_i), [n, D]."""
  phi = env.features
  return pair_features(phi[data.ctx, data.a1], phi[data.ctx, data.a2])


class PreferenceFit(NamedTuple):
  theta: jax.Array  # [D] the MLE of the logistic loss on psi over ||theta|| <= B
  cov: jax.Array  # [D, D] Sigma = lam I + sum psi psi^T


def fit_preferences(env, data, *, lam, mask=None):
  """The preference MLE argmax_{||theta|| <= B} sum y log P_theta + (1 - y) log(1 - P_theta) (Eq. (3)
  with psi for phi(a1) - phi(a2); gshf_jax.bt_mle) and its covariance Sigma (Section 2.3)."""
  psi = data_pair_features(env, data)
  return PreferenceFit(g.bt_mle(psi, data.y, env.bound, mask), g.covariance(psi, lam, mask))


def pair_uncertainty(env, cov):
  """Gamma(x, a1, a2) = ||psi(x, a1, a2)||_{Sigma^{-1}}, [X, K, K] (zero on the diagonal). As sigmoid is
  1/4-Lipschitz, |P_theta - P_theta_hat| <= ||theta - theta_hat||_Sigma Gamma / 4."""
  return g.elliptical_norm(all_pair_features(env), cov)


def pessimistic_policy(env, fit, beta, *, tol=None):
  """Offline NLHF with pessimism: the max-player's max-min policy of the game whose payoff is the lower
  confidence bound P_hat - beta Gamma (pair_uncertainty), against a min-player free to pick pairs the
  data leave uncertain:  argmax_{pi1} min_{pi2} E_x[pi1^T (P_hat - beta Gamma) pi2 - eta KL(pi1 || pi0)
  + eta KL(pi2 || pi0)] (gshf_jax.saddle_point). beta = 0 is the plug-in NE of the MLE.

  Returns:
    [X, K] log pi1.
  """
  payoff = preference_matrix(env, fit.theta) - beta * pair_uncertainty(env, fit.cov)
  logp1, _, _ = g.saddle_point(env.ref_logp, payoff, env.eta, tol=tol)
  return logp1


def bt_reward_policy(env, data):
  """Reward-based RLHF on the same data: the Bradley-Terry MLE w of r(a) = <w, phi(a)> (gshf_jax.bt_mle
  on phi(a1) - phi(a2), ||w|| <= B) and its Gibbs policy pi ∝ pi0 exp(r / eta) (Definition 2.2), [X, K]."""
  dphi = env.features[data.ctx, data.a1] - env.features[data.ctx, data.a2]
  w = g.bt_mle(dphi, data.y, env.bound)
  return g.gibbs_logprobs(env.ref_logp, env.features @ w, env.eta)


# ---------------------------------------------------------------------------------------------------
# Game solvers from the literature, as trajectories.


def solver_trajectory(ref_logp, pref, eta, *, solver, steps, step_size=None):
  """The duality gap of each iterate of a game solver started at pi0, [steps + 1] (context-averaged).

  solver (all with step alpha; default alpha = 1 / (eta + 1)):
    "extragradient"   gshf_jax's predictive-update extragradient (gshf_jax.nash.extragradient_step).
    "nash_md"         Nash-MD (Munos et al. 2023, Section 7): pi_mu ∝ pi_t^(1 - alpha eta) pi0^(alpha eta),
                      pi_t+1 ∝ pi_mu exp(alpha P pi_mu).
    "mirror_descent"  pi_t+1 ∝ pi_t^(1 - alpha eta) pi0^(alpha eta) exp(alpha P pi_t) (Nash-MD playing
                      against pi_t instead of the mixture).
    "sppo"            SPPO's multiplicative weights (Wu et al. 2024): pi_t+1 ∝ pi_t exp(alpha P pi_t),
                      which ignores pi0 except as the start.

  Args:
    ref_logp: [..., K]; pref: [..., K, K]; eta > 0.
    solver: one of SOLVERS (static).
    steps: static number of iterations.
    step_size: alpha > 0 (default 1 / (eta + 1)).
  """
  if solver not in SOLVERS:
    raise ValueError(f"solver must be one of {SOLVERS}, got {solver!r}")
  _checks.check_positive_int("steps", steps)
  alpha = 1.0 / (eta + 1.0) if step_size is None else step_size
  play = lambda logp: jnp.einsum("...ab,...b->...a", pref, jnp.exp(logp))
  mixture = lambda logp: jax.nn.log_softmax((1.0 - alpha * eta) * logp + alpha * eta * ref_logp, axis=-1)

  def update(logp):
    if solver == "extragradient":
      return g.nash.extragradient_step(logp, ref_logp, pref, eta, alpha)
    if solver == "nash_md":
      mu = mixture(logp)
      return jax.nn.log_softmax(mu + alpha * play(mu), axis=-1)
    if solver == "mirror_descent":
      return jax.nn.log_softmax(mixture(logp) + alpha * play(logp), axis=-1)
    return jax.nn.log_softmax(logp + alpha * play(logp), axis=-1)

  def step(logp, _):
    new = update(logp)
    return new, g.duality_gap(new, ref_logp, pref, eta)

  start = jax.nn.log_softmax(ref_logp, axis=-1)
  _, gaps = jax.lax.scan(step, start, None, length=steps)
  return jnp.concatenate([g.duality_gap(start, ref_logp, pref, eta)[None], gaps])


# ---------------------------------------------------------------------------------------------------
# Batch-online NLHF.


def relative_uncertainty(env, logp, main_logp, cov, counts):
  """sum_i E_{a1 ~ pi1_t, a2 ~ pi} ||psi(x_{t,i}, a1, a2)||_{Sigma_{t,m}^{-1}}, the analogue of Eq. (7)
  without beta for the sigmoid link: sigma is 1/4-Lipschitz, so for every theta with ||theta - theta_hat||_Sigma
  <= beta, |E P_theta(x, pi1_t, pi) - E P_theta_hat(x, pi1_t, pi)| <= beta / 4 * E ||psi||_{Sigma^-1} (a bound
  the norm of the expected feature is not). It is positive at pi = pi1_t, whose pairs are informative,
  while ||E psi||, antisymmetric, vanishes there. The paper's own enhancer (a ratio over the class of P,
  summarized in shared/reference) is not confirmed; this is the linear-class bound."""
  norms = g.elliptical_norm(all_pair_features(env), cov)  # [X, K, K]
  return counts @ jnp.einsum("xa,xb,xab->x", jnp.exp(main_logp), jnp.exp(logp), norms)


def uncertainty_enhancer(key, env, main_logp, cov, counts, beta, *, steps=100, starts=2,
                         multipliers=MULTIPLIERS):
  """The enhancer: argmax over tabular pi of beta * relative_uncertainty(pi) subject to the analogue of
  Eq. (8), eta sum_i KL(pi(.|x_{t,i}) || pi1_t(.|x_{t,i})) <= beta * relative_uncertainty(pi).

  As bandit_sim.online.uncertainty_enhancer: for each Lagrange weight kappa, Adam ascends
  Gamma - kappa * eta * KL in the logits from `starts` random perturbations of pi1_t; every iterate is
  checked against the constraint and the feasible one of largest Gamma is returned (pi1_t itself, feasible
  with KL = 0, if none beats it). A heuristic: Gamma is linear in pi but the constraint set is not convex.

  Returns:
    bandit_sim.online.EnhancerResult with theta = the [X, K] log-probabilities of pi2_t.
  """
  main_logp = jax.nn.log_softmax(main_logp, axis=-1)

  def measure(logits):
    logp = jax.nn.log_softmax(logits, axis=-1)
    return beta * relative_uncertainty(env, logp, main_logp, cov, counts), online.batch_kl(env, logp, main_logp, counts)

  opt = optax.adam(optax.cosine_decay_schedule(0.3, steps, alpha=0.01))

  def run(logits0, kappa):
    penalized = lambda logits: -(lambda gam, kl: gam - kappa * kl)(*measure(logits))

    def step(carry, _):
      logits, state, best, best_value = carry
      updates, state = opt.update(jax.grad(penalized)(logits), state, logits)
      logits = optax.apply_updates(logits, updates)
      gam, kl = measure(logits)
      better = (kl <= gam) & (gam > best_value)
      return (logits, state, jnp.where(better, logits, best), jnp.where(better, gam, best_value)), None

    init = (logits0, opt.init(logits0), main_logp, measure(main_logp)[0])  # pi1_t itself is feasible (KL 0)
    (_, _, best, best_value), _ = jax.lax.scan(step, init, None, length=steps)
    return best, best_value

  noise = jax.random.normal(key, (len(multipliers) * starts, *main_logp.shape), main_logp.dtype)
  kappas = jnp.repeat(jnp.asarray(multipliers, main_logp.dtype), starts)
  logits, values = jax.vmap(run)(main_logp + noise, kappas)
  logp = jax.nn.log_softmax(logits[jnp.argmax(values)], axis=-1)
  objective, kl = measure(logp)
  return online.EnhancerResult(logp, objective, kl, objective - kl)


class NLHFHistory(NamedTuple):
  """Per-iteration record of online_nlhf; every field has a leading [T] axis."""
  theta: jax.Array  # [T, D] the MLE behind pi1_t
  main_gap: jax.Array  # [T] duality gap of pi1_t in the true game
  enhancer_gap: jax.Array  # [T] duality gap of pi2_t
  enhancer_objective: jax.Array  # [T] beta * relative_uncertainty(pi2_t)
  enhancer_kl: jax.Array  # [T] eta sum_i KL(pi2_t || pi1_t) on the batch (<= objective)
  data: Preferences  # [T, m]


class NLHFResult(NamedTuple):
  history: NLHFHistory
  logp: jax.Array  # [X, K] the output: the NE of the MLE on all data
  gap: jax.Array  # its duality gap


def online_nlhf(key, env, *, enhancer, num_iterations, batch_size, beta=1.0, lam=1.0, offline_data=None,
                enhancer_steps=100):
  """Batch-online NLHF: for t = 1..T, fit the preference MLE on D_off and all data so far, play its Nash
  equilibrium as the main agent pi1_t, observe m contexts, choose pi2_t, draw a1 ~ pi1_t, a2 ~ pi2_t and
  query P*. The output is the NE of the MLE on all the data.

  enhancer is one of ENHANCERS, or its index (which may be traced, so one compilation serves all):
    "uncertainty"   uncertainty_enhancer with Sigma_{t,m} = lam I + (1/m) sum psi psi^T (the analogue of
                    Option II, Eq. (7)-(8)).
    "reference"     pi2_t = pi0 (Option I).
    "random_pairs"  both responses from pi1_t.
    "offline"       both responses from pi0 whatever the learner does: offline data at the same budget.

  Args:
    key: PRNG key.
    env: PreferenceBandit.
    enhancer: one of ENHANCERS or an int index into it.
    num_iterations, batch_size: T and m (static).
    beta: beta >= 0 of the enhancer.
    lam: ridge lam > 0.
    offline_data: optional Preferences D_off (hybrid).
    enhancer_steps: Adam steps of the enhancer per Lagrange weight.

  Returns:
    NLHFResult.
  """
  if isinstance(enhancer, str):
    if enhancer not in ENHANCERS:
      raise ValueError(f"enhancer must be one of {ENHANCERS} or an index into it, got {enhancer!r}")
    enhancer = ENHANCERS.index(enhancer)
  _checks.check_positive_int("num_iterations", num_iterations)
  _checks.check_positive_int("batch_size", batch_size)
  _checks.check_positive("lam", lam)
  n_off = 0 if offline_data is None else offline_data.ctx.shape[0]
  total = n_off + num_iterations * batch_size
  zeros = jnp.zeros(total, jnp.int32)
  buffer = Preferences(zeros, zeros, zeros, zeros)
  if offline_data is not None:
    buffer = jax.tree.map(lambda b, d: b.at[:n_off].set(d), buffer, offline_data)
  num_contexts = env.features.shape[0]
  zero = jnp.zeros((), env.features.dtype)

  def iteration(carry, t_key):
    buffer, t = carry
    mask = (jnp.arange(total) < n_off + t * batch_size).astype(env.features.dtype)
    fit = fit_preferences(env, buffer, lam=lam, mask=mask)
    main = nash_policy(env, fit.theta)
    k_ctx, k_enh, k_data = jax.random.split(t_key, 3)
    ctx = jax.random.categorical(k_ctx, jnp.log(env.context_probs), shape=(batch_size,))
    counts = online.context_counts(ctx, num_contexts)

    def uncertainty():
      cov = g.covariance(data_pair_features(env, buffer), lam, mask, scale=1.0 / batch_size)
      result = uncertainty_enhancer(k_enh, env, main, cov, counts, beta, steps=enhancer_steps)
      return main, result.theta, result.objective, result.kl

    branches = [uncertainty, lambda: (main, env.ref_logp, zero, zero), lambda: (main, main, zero, zero),
                lambda: (env.ref_logp, env.ref_logp, zero, zero)]
    first, second, objective, kl = jax.lax.switch(enhancer, branches)
    batch = collect_preferences(k_data, env, first, second, batch_size, ctx=ctx)
    start = n_off + t * batch_size
    buffer = jax.tree.map(lambda b, d: jax.lax.dynamic_update_slice(b, d, (start,)), buffer, batch)
    record = NLHFHistory(fit.theta, duality_gap(env, main), duality_gap(env, second), objective, kl, batch)
    return (buffer, t + 1), record

  (buffer, _), history = jax.lax.scan(iteration, (buffer, jnp.int32(0)),
                                      jax.random.split(key, num_iterations))
  final = nash_policy(env, fit_preferences(env, buffer, lam=lam).theta)
  return NLHFResult(history, final, duality_gap(env, final))
