"""Online and hybrid iterative GSHF (Algorithm 2, Section 4, Appendix B) on the exact linear bandit.

Each iteration t = 1..T: fit the MLE on D_off and all data so far, take its Gibbs policy as the main
agent pi1_t (Eq. (6)), observe m contexts, choose the enhancer pi2_t, draw a1 ~ pi1_t, a2 ~ pi2_t, query
the Bradley-Terry oracle. After T iterations the output is the pi1_t of highest value on a validation
set (step 10). Everything is a pure function of (key, env, hyper-parameters); the loop is a `lax.scan`
over fixed-size buffers, so a whole run jits once and vmaps over seeds.

Enhancers (`enhancer=`, or `option=` "I" / "II" for Algorithm 2's two):
  "reference"    Option I: pi2_t = pi_ref (pi0 by default); with D_off this is hybrid GSHF (Theorem 4.2).
  "uncertainty"  Option II: the maximizer of Eq. (7) over the Gibbs class inside the set of Eq. (8)
                 (`uncertainty_enhancer`), Theorem 4.4.
  "best_of_n"    Section 5.2: the best-of-n policy of pi1_t under r_MLE (exact, gshf_jax).
  "temperature"  Section 5.2 (LLaMA 2): pi1_t at a sampling temperature, pi2 ∝ pi1_t^(1 / temperature).
  "variant"      Section 5.2 (Claude): a model variant, the previous iterate's main policy pi1_{t-1}
                 (pi_ref at t = 1).
  "random_pairs" baseline: both responses from pi1_t.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

import gshf_jax as g
from bandit_sim import env as bandit
from bandit_sim import offline
from gshf_jax import _checks

ENHANCERS = ("reference", "uncertainty", "best_of_n", "temperature", "variant", "random_pairs")
OPTIONS = {"I": "reference", "II": "uncertainty"}
# Lagrange weights kappa of the penalized enhancer objective Gamma - kappa * eta * KL (see
# uncertainty_enhancer); kappa >= 1 keeps every global maximizer feasible, smaller kappa explores further.
MULTIPLIERS = (0.25, 0.5, 0.75, 0.9, 1.0, 1.5)


# ---------------------------------------------------------------------------------------------------
# The enhancer of Option II: Eq. (7) subject to Eq. (8).


def context_counts(ctx, num_contexts):
  """c_x = #{i : x_{t,i} = x}, [X]: sums over a batch's contexts become sums over contexts weighted by c_x."""
  return jnp.zeros(num_contexts, jnp.result_type(float)).at[ctx].add(1.0)


def relative_uncertainty(env, logp, main_logp, cov, counts):
  """Eq. (7) without beta: sum_i ||phi(x_{t,i}, pi) - phi(x_{t,i}, pi1_t)||_{Sigma_{t,m}^{-1}}.

  Args:
    env: LinearBandit.
    logp, main_logp: [X, K] the candidate pi and the main agent pi1_t.
    cov: [d, d] Sigma_{t,m}.
    counts: [X] context counts of the batch (context_counts).
  """
  diff = bandit.expected_features(env, logp) - bandit.expected_features(env, main_logp)
  return counts @ g.elliptical_norm(diff, cov)


def batch_kl(env, logp, main_logp, counts):
  """eta * sum_i KL(pi(.|x_{t,i}) || pi1_t(.|x_{t,i})), the left-hand side of Eq. (8) on the batch."""
  return env.eta * (counts @ g.kl(logp, main_logp))


class EnhancerResult(NamedTuple):
  theta: jax.Array  # [d] the enhancer's Gibbs parameter, ||theta|| <= B
  objective: jax.Array  # Gamma^m_t(lam, pi1_t, pi2_t) of Eq. (7), beta included
  kl: jax.Array  # batch_kl(pi2_t): Eq. (8) holds iff kl <= objective
  slack: jax.Array  # objective - kl >= 0


def uncertainty_enhancer(key, env, main_theta, cov, counts, beta, *, starts=4, steps=100,
                         multipliers=MULTIPLIERS):
  """Algorithm 2, Option II: argmax over pi in Pi_t of Gamma^m_t(lam, pi1_t, pi) (Eq. (7)).

  Pi_t (Eq. (8)) = {pi in the Gibbs class : eta KL(pi || pi1_t) <= Gamma^m_t(lam, pi1_t, pi)}, with the
  KL summed over the batch's contexts x_{t,i} like the right-hand side (the form Lemma 4.3's proof
  establishes for pi*; Eq. (8) as printed writes E_{x ~ d0} against the sum of m norms). pi1_t is in
  Pi_t with objective 0, so the set is never empty.

  The set is not convex, so this is a documented heuristic with a guarantee only of feasibility and of
  improving on pi1_t: for each Lagrange weight kappa in `multipliers`, Adam (cosine-decayed step)
  ascends the penalized objective Gamma - kappa * eta * KL in theta, projected onto ||theta|| <= B after
  every step, from `starts` points near theta_1 along Sigma^{-1}(phi(x, a) - phi(x, pi1_t)) for random
  batch contexts x and actions a (the objective is flat at theta_1 itself) and `starts` random points on
  the sphere ||theta|| = B in the span of the features; every iterate of every run is checked against
  Eq. (8) and the feasible one of largest Gamma is returned (pi1_t if none beats it). For
  kappa >= 1 any global maximizer is feasible (Gamma - KL >= 0 there, as at pi1_t); smaller kappa
  reach further along the constraint's boundary.

  Args:
    key: PRNG key (start directions).
    env: LinearBandit.
    main_theta: [d] theta_1 of pi1_t.
    cov: [d, d] Sigma_{t,m}.
    counts: [X] the batch's context counts.
    beta: beta >= 0 of Eq. (7).
    starts, steps: static ints, starting points of each kind per multiplier, Adam steps per run.
    multipliers: static tuple of kappa > 0.

  Returns:
    EnhancerResult.
  """
  _checks.check_positive_int("starts", starts)
  _checks.check_positive_int("steps", steps)
  _checks.check_in_range("beta", beta, 0.0, float("inf"))
  main_logp = offline.gibbs_class_logp(env, main_theta)
  project = lambda theta: optax.projections.projection_l2_ball(theta, env.bound)

  # Inner loop: ||v||_{Sigma^{-1}} = |L^{-1} v| (Sigma = L L^T) with the features whitened once, so each
  # step is matrix products, not a triangular solve (2.5x faster vmapped on CPU).
  whitened = env.features @ jnp.linalg.inv(jnp.linalg.cholesky(cov)).T  # [X, K, d]
  main_whitened = jnp.einsum("xk,xkd->xd", jnp.exp(main_logp), whitened)

  def measure(theta):
    logp = offline.gibbs_class_logp(env, theta)
    diff = jnp.einsum("xk,xkd->xd", jnp.exp(logp), whitened) - main_whitened
    return beta * (counts @ optax.safe_norm(diff, 0.0, axis=-1)), batch_kl(env, logp, main_logp, counts)

  # Starts: `starts` points near theta_1 along Sigma^{-1}(phi(x, a) - phi(x, pi1_t)) at random batch
  # contexts x and actions a, and `starts` random points on the sphere ||theta|| = B in the features' span.
  k_ctx, k_act, k_far = jax.random.split(key, 3)
  x = jax.random.categorical(k_ctx, jnp.log(counts), shape=(starts,))
  a = jax.random.randint(k_act, (starts,), 0, env.features.shape[1])
  directions = jnp.linalg.solve(cov, (env.features[x, a] - bandit.expected_features(env, main_logp)[x]).T).T
  directions = directions / jnp.maximum(jnp.linalg.norm(directions, axis=-1, keepdims=True), 1e-30)
  flat = env.features.reshape(-1, env.features.shape[-1])  # [X K, d]
  far = jax.random.normal(k_far, (starts, flat.shape[0]), cov.dtype) @ flat
  far = env.bound * far / jnp.maximum(jnp.linalg.norm(far, axis=-1, keepdims=True), 1e-30)
  step_size = 0.05 * env.bound
  thetas0 = jnp.concatenate([main_theta + step_size * directions, far])
  opt = optax.adam(optax.cosine_decay_schedule(2 * step_size, steps, alpha=0.01))

  def run(theta0, kappa):
    penalized = lambda theta: -(lambda gam, kl: gam - kappa * kl)(*measure(theta))

    def step(carry, _):
      theta, state, best_theta, best_value = carry
      updates, state = opt.update(jax.grad(penalized)(theta), state, theta)
      theta = project(optax.apply_updates(theta, updates))
      gam, kl = measure(theta)
      better = (kl <= gam) & (gam > best_value)
      return (theta, state, jnp.where(better, theta, best_theta), jnp.where(better, gam, best_value)), None

    theta0 = project(theta0)
    gam0, kl0 = measure(theta0)
    ok = kl0 <= gam0
    init = (theta0, opt.init(theta0), jnp.where(ok, theta0, main_theta), jnp.where(ok, gam0, 0.0))
    (_, _, best_theta, best_value), _ = jax.lax.scan(step, init, None, length=steps)
    return best_theta, best_value

  kappas = jnp.repeat(jnp.asarray(multipliers, cov.dtype), thetas0.shape[0])
  thetas, values = jax.vmap(run)(jnp.tile(thetas0, (len(multipliers), 1)), kappas)
  best = jnp.argmax(values)
  theta = jnp.where(values[best] > 0, thetas[best], main_theta)
  logp = offline.gibbs_class_logp(env, theta)
  objective = beta * relative_uncertainty(env, logp, main_logp, cov, counts)
  kl = batch_kl(env, logp, main_logp, counts)
  return EnhancerResult(theta, objective, kl, objective - kl)


# ---------------------------------------------------------------------------------------------------
# Algorithm 2.


class OnlineHistory(NamedTuple):
  """Per-iteration record of Algorithm 2; every field has a leading [T] axis."""
  theta: jax.Array  # [T, d] theta_MLE behind pi1_t (Eq. (6))
  main_logp: jax.Array  # [T, X, K] pi1_t
  enhancer_logp: jax.Array  # [T, X, K] pi2_t
  data: bandit.Preferences  # [T, m] D_t
  main_suboptimality: jax.Array  # [T] J(pi*) - J(pi1_t)
  enhancer_suboptimality: jax.Array  # [T] J(pi*) - J(pi2_t)
  enhancer_objective: jax.Array  # [T] Gamma^m_t(lam, pi1_t, pi2_t), Eq. (7) with beta
  enhancer_kl: jax.Array  # [T] eta sum_i KL(pi2_t || pi1_t) on the batch; Eq. (8): <= enhancer_objective
  optimal_kl: jax.Array  # [T] eta sum_i KL(pi* || pi1_t) on the batch
  optimal_uncertainty: jax.Array  # [T] Eq. (7) without beta at pi = pi*: pi* in Pi_t (Lemma 4.3)
  #                                 iff optimal_kl <= beta' * optimal_uncertainty, for any beta'
  validation: jax.Array  # [T] validation estimate of J(pi1_t)


class OnlineResult(NamedTuple):
  history: OnlineHistory
  data: bandit.Preferences  # [n_off + T m] D_off followed by D_1, ..., D_T
  selected: jax.Array  # index t (0-based) of the output policy (Algorithm 2, step 10)
  logp: jax.Array  # [X, K] the output policy pi1_selected
  suboptimality: jax.Array  # J(pi*) - J(output)
  all_data_logp: jax.Array  # [X, K] the Gibbs policy of the MLE on all of `data` (no selection)


def enhancer_index(option, enhancer):
  """Which of ENHANCERS a run uses: `enhancer` (a name, or an int index into ENHANCERS that may be
  traced, so one compiled run serves every enhancer), or Algorithm 2's for `option` ("I" or "II").
  Exactly one of the two must be given."""
  if (option is None) == (enhancer is None):
    raise ValueError(f"give exactly one of option (one of {tuple(OPTIONS)}) and enhancer (one of "
                     f"{ENHANCERS}); got option={option!r}, enhancer={enhancer!r}")
  if option is not None:
    if option not in OPTIONS:
      raise ValueError(f"option must be one of {tuple(OPTIONS)}, got {option!r}")
    return ENHANCERS.index(OPTIONS[option])
  if isinstance(enhancer, str):
    if enhancer not in ENHANCERS:
      raise ValueError(f"enhancer must be one of {ENHANCERS}, got {enhancer!r}")
    return ENHANCERS.index(enhancer)
  _checks.check_in_range("enhancer", enhancer, 0, len(ENHANCERS) - 1)
  return enhancer


def validation_value(key, env, logp, num_validation):
  """Monte Carlo estimate of J(pi) on a validation set (Algorithm 2, step 10): num_validation prompts
  x ~ d0, one response a ~ pi(.|x) each, scored by the gold reward minus eta * log(pi(a|x) / pi0(a|x)),
  an unbiased estimate of Eq. (2) (as the paper scores models: gold reward and KL on held-out prompts).
  The same key gives every policy the same prompts and Gumbel noise (common random numbers)."""
  k_ctx, k_act = jax.random.split(key)
  ctx = jax.random.categorical(k_ctx, jnp.log(env.context_probs), shape=(num_validation,))
  a = jax.random.categorical(k_act, logp[ctx])
  r = bandit.rewards(env, env.theta_star)[ctx, a]
  return jnp.mean(r - env.eta * (logp[ctx, a] - env.ref_logp[ctx, a]))


def _concat(a, b):
  return jax.tree.map(lambda u, v: jnp.concatenate([u, v]), a, b)


def online_gshf(key, env, *, option=None, enhancer=None, num_iterations, batch_size, beta=1.0, lam=1.0,
                offline_data=None, ref_logp=None, best_of_n=4, temperature=2.0, num_validation=1000,
                enhancer_starts=4, enhancer_steps=100, validation_key=None):
  """Algorithm 2 (online / hybrid iterative GSHF) for T = num_iterations batches of m = batch_size.

  Iteration t: theta_t = MLE (Eq. (3), ||theta|| <= B) on D_off and D_1..D_{t-1}; pi1_t = its Gibbs
  policy (Eq. (6)); x_{t,i} ~ d0, i <= m; pi2_t from the enhancer (module docstring); a1 ~ pi1_t,
  a2 ~ pi2_t, y from the BT oracle (Eq. (1)). Sigma_{t,m} = lam I + (1/m) sum dphi dphi^T over the same
  rows as the MLE (exactly Eq. (8)'s matrix when there is no D_off). Output: the pi1_t of largest
  validation_value (step 10). m = 1 is the sequential setting of Appendix B.2 (see `regret`).

  Args:
    key: PRNG key.
    env: LinearBandit.
    option: "I" or "II" (Algorithm 2), or None when `enhancer` is given.
    enhancer: one of ENHANCERS, or its index (may be traced), or None when `option` is given.
    num_iterations, batch_size: T and m, static ints >= 1.
    beta: >= 0, the confidence radius of Eq. (7) / (8) ("uncertainty" only); the KL coefficient is env.eta.
    lam: > 0, the lambda of Sigma_{t,m}.
    offline_data: optional D_off (Preferences).
    ref_logp: [X, K] pi_ref of Option I (default pi0).
    best_of_n: n of "best_of_n" (>= 1, may be traced).
    temperature: > 0, of "temperature".
    num_validation: static int, validation prompts.
    enhancer_starts, enhancer_steps: of uncertainty_enhancer.
    validation_key: the key of the validation draws; pass it to `validation_value` to score other
      policies on the same prompts and noise. Default: split from `key` (then `key` drives the rest).

  Returns:
    OnlineResult.
  """
  index = enhancer_index(option, enhancer)
  _checks.check_positive_int("num_iterations", num_iterations)
  _checks.check_positive_int("batch_size", batch_size)
  _checks.check_positive_int("num_validation", num_validation)
  _checks.check_in_range("beta", beta, 0.0, float("inf"))
  _checks.check_positive("lam", lam)
  _checks.check_positive("temperature", temperature)
  _checks.check_positive("best_of_n", best_of_n)
  ref_logp = env.ref_logp if ref_logp is None else ref_logp
  _checks.check_shape("ref_logp", ref_logp, env.ref_logp.shape)
  m, T = batch_size, num_iterations
  empty = bandit.Preferences(*(jnp.zeros((0,), jnp.int32) for _ in range(4)))
  offline_data = empty if offline_data is None else offline_data
  n_off = offline_data.y.shape[0]
  data = _concat(offline_data, bandit.Preferences(*(jnp.zeros((T * m,), jnp.int32) for _ in range(4))))
  mask0 = jnp.arange(n_off + T * m) < n_off
  star = bandit.optimal_logp(env)
  num_contexts = env.features.shape[0]
  k_run, k_val = jax.random.split(key) if validation_key is None else (key, validation_key)

  def iteration(carry, t):
    data, mask, previous_main = carry
    k_ctx, k_enh, k_pairs = jax.random.split(jax.random.fold_in(k_run, t), 3)
    dphi = bandit.feature_differences(env, data)
    theta = g.bt_mle(dphi, data.y, env.bound, mask)
    main = offline.gibbs_class_logp(env, theta)
    cov = g.covariance(dphi, lam, mask, scale=1.0 / m)
    ctx = jax.random.categorical(k_ctx, jnp.log(env.context_probs), shape=(m,))
    counts = context_counts(ctx, num_contexts)
    branches = (  # in the order of ENHANCERS
        lambda: ref_logp,
        lambda: offline.gibbs_class_logp(env, uncertainty_enhancer(
            k_enh, env, theta, cov, counts, beta, starts=enhancer_starts, steps=enhancer_steps).theta),
        lambda: g.best_of_n_logprobs(main, bandit.rewards(env, theta), best_of_n),
        lambda: jax.nn.log_softmax(main / temperature, axis=-1),
        lambda: previous_main,
        lambda: main)
    if isinstance(index, int):
      enhancer_logp = branches[index]()
    else:
      enhancer_logp = jax.lax.switch(index, branches)
    batch = bandit.collect_preferences(k_pairs, env, main, enhancer_logp, m, ctx=ctx)
    start = n_off + t * m
    data = jax.tree.map(lambda buf, new: jax.lax.dynamic_update_slice(buf, new, (start,)), data, batch)
    mask = jax.lax.dynamic_update_slice(mask, jnp.ones(m, bool), (start,))
    objective = beta * relative_uncertainty(env, enhancer_logp, main, cov, counts)
    record = OnlineHistory(
        theta=theta, main_logp=main, enhancer_logp=enhancer_logp, data=batch,
        main_suboptimality=bandit.suboptimality(env, main),
        enhancer_suboptimality=bandit.suboptimality(env, enhancer_logp),
        enhancer_objective=objective, enhancer_kl=batch_kl(env, enhancer_logp, main, counts),
        optimal_kl=batch_kl(env, star, main, counts),
        optimal_uncertainty=relative_uncertainty(env, star, main, cov, counts),
        validation=validation_value(k_val, env, main, num_validation))
    return (data, mask, main), record

  (data, _, _), history = jax.lax.scan(iteration, (data, mask0, ref_logp), jnp.arange(T))
  selected = jnp.argmax(history.validation)
  logp = history.main_logp[selected]
  all_data_logp = offline.gibbs_class_logp(env, g.bt_mle(bandit.feature_differences(env, data), data.y, env.bound))
  return OnlineResult(history, data, selected, logp, bandit.suboptimality(env, logp), all_data_logp)


def offline_only(key, env, *, num_queries, behaviour_logp, offline_data=None):
  """The equal-budget baseline: spend num_queries on more offline data (both responses from
  `behaviour_logp`), then output the Gibbs policy of the MLE on D_off and them. Returns (logp, data)."""
  _checks.check_positive_int("num_queries", num_queries)
  data = bandit.collect_preferences(key, env, behaviour_logp, behaviour_logp, num_queries)
  if offline_data is not None:
    data = _concat(offline_data, data)
  theta = g.bt_mle(bandit.feature_differences(env, data), data.y, env.bound)
  return offline.gibbs_class_logp(env, theta), data


def regret(history):
  """Appendix B.2: cumulative Reg(t) = sum_{s <= t} [J(pi*) - J(pi1_s)] and
  Reg_ave(t) = sum_{s <= t} [2 J(pi*) - J(pi1_s) - J(pi2_s)] / 2, each [T]."""
  main = history.main_suboptimality
  return jnp.cumsum(main, -1), jnp.cumsum((main + history.enhancer_suboptimality) / 2, -1)
