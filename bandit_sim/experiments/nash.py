"""The `nash` experiment: Nash learning from human feedback under a general (intransitive) preference
(bandit_sim.nlhf): game solvers, offline NLHF with and without pessimism, batch-online NLHF with an
uncertainty enhancer, and reward-based RLHF against NLHF.

Every multi-seed measurement is one jitted, vmapped call over seeds (chunked, _common.map_seeds).
Nothing is asserted; everything measured is reported.
"""

import jax
import jax.numpy as jnp
import numpy as np

from bandit_sim import env as bandit
from bandit_sim import nlhf
from bandit_sim.experiments import _common
from bandit_sim.experiments._common import (
  finding,
  fmt,
  map_seeds,
  mean_and_stderr,
  paired,
  per_seed,
  pyplot,
  sanity_check,
  sign_verdict,
)
from gshf_jax.significance import holm_significant

ENV = dict(num_contexts=10, num_actions=8, dim=4, bound=2.0, eta=0.1)
INTRANSITIVITY = 0.7  # share of ||theta*|| in the bilinear (intransitive) part, offline and online runs
LAM = 1.0
PESSIMISM_BETAS = (0.0, 0.1, 0.25, 0.5, 1.0)
COVERAGES = ("pi0", "nash", "misses_nash")
REWARD_VS_NASH = (0.0, 0.4, 0.8)
SOLVER_ETAS = (0.1, 1.0)


def make_env(key, intransitivity=INTRANSITIVITY):
  return nlhf.make_preference_bandit(key, **ENV, intransitivity=intransitivity)


def behaviour_policy(env, coverage):
  """0 "pi0": pi0, broad coverage; 1 "nash": the NE pi* itself, narrow coverage around the comparator;
  2 "misses_nash": pi0 without the NE's two favourite actions per context, which D_off never shows."""
  return _common.behaviour_policy(env, coverage, nlhf.nash_policy(env))


def offline_seed(key, coverage, n):
  """Per seed: the duality gaps of pessimistic NLHF over PESSIMISM_BETAS (beta = 0: the plug-in NE of
  the MLE) and of the reward-based policy, on n pairs from the behaviour policy; and the mass each puts on
  actions the data never show."""
  k_env, k_data = jax.random.split(key)
  env = make_env(k_env)
  behaviour = behaviour_policy(env, coverage)
  data = nlhf.collect_preferences(k_data, env, behaviour, behaviour, n)
  fit = nlhf.fit_preferences(env, data, lam=LAM)
  policies = jnp.stack([nlhf.pessimistic_policy(env, fit, b) for b in PESSIMISM_BETAS]
                       + [nlhf.bt_reward_policy(env, data)])
  unseen = behaviour < -1e30
  gaps = jax.vmap(lambda logp: nlhf.duality_gap(env, logp))(policies)
  unseen_mass = jnp.sum(jnp.where(unseen, jnp.exp(policies), 0.0), axis=-1) @ env.context_probs
  star_mass = jnp.sum(jnp.where(unseen, jnp.exp(nlhf.nash_policy(env)), 0.0), axis=-1) @ env.context_probs
  return {"gaps": gaps, "unseen_mass": unseen_mass, "nash_unseen_mass": star_mass,
          "ref_gap": nlhf.duality_gap(env, env.ref_logp)}


def reward_vs_nash_seed(key, intransitivity, n):
  """Per seed, on n pairs from pi0: the duality gaps of NLHF (NE of the preference MLE) and of RLHF
  (Gibbs policy of the BT reward MLE), RLHF at the true BT part w*, and NLHF's win rate against RLHF."""
  k_env, k_data = jax.random.split(key)
  env = make_env(k_env, intransitivity)
  data = nlhf.collect_preferences(k_data, env, env.ref_logp, env.ref_logp, n)
  nash = nlhf.nash_policy(env, nlhf.fit_preferences(env, data, lam=LAM).theta)
  reward = nlhf.bt_reward_policy(env, data)
  linear = nlhf.as_linear_bandit(env)
  true_reward = bandit.optimal_logp(linear)
  return {"nlhf_reward_suboptimality": bandit.suboptimality(linear, nash),
          "rlhf_reward_suboptimality": bandit.suboptimality(linear, reward),"nlhf_gap": nlhf.duality_gap(env, nash), "rlhf_gap": nlhf.duality_gap(env, reward),
          "true_reward_gap": nlhf.duality_gap(env, true_reward), "ref_gap": nlhf.duality_gap(env, env.ref_logp),
          "nlhf_win_rate": nlhf.win_rate(env, nash, reward)}


def solver_seed(key, eta, steps):
  """Per seed: every solver's duality-gap trajectory on one random intransitive game, [solvers, steps + 1]."""
  env = make_env(key)
  pref = nlhf.preference_matrix(env, env.theta_star)
  return jnp.stack([nlhf.solver_trajectory(env.ref_logp, pref, eta, solver=s, steps=steps)
                    for s in nlhf.SOLVERS])


def online_seed(key, enhancer, num_iterations, batch_size):
  k_env, k_run = jax.random.split(key)
  env = make_env(k_env)
  result = nlhf.online_nlhf(k_run, env, enhancer=enhancer, num_iterations=num_iterations,
                            batch_size=batch_size, beta=1.0, lam=LAM)
  return {"curve": jnp.concatenate([result.history.main_gap, result.gap[None]]), "gap": result.gap,
          "slack": result.history.enhancer_objective - result.history.enhancer_kl}


def compute(key, *, seeds, quick, progress):
  """The solver, offline, online and reward-vs-NLHF comparisons; returns (results, arrays) with the solvers'
  mean gap curves for the plot."""
  k_solve, k_off, k_on, k_rew = jax.random.split(key, 4)
  n_off = 200
  steps = 60 if quick else 200
  num_iterations, batch_size = (4, 20) if quick else (10, 20)
  online_seeds = min(seeds, 8 if quick else 50)
  solver_seeds = min(seeds, 50)
  results = {"env": ENV, "intransitivity": INTRANSITIVITY, "lam": LAM, "seeds": seeds}

  progress("nash: game solvers")
  solvers = per_seed(lambda k, eta: solver_seed(k, eta, steps))
  solver_keys = jax.random.split(k_solve, solver_seeds)
  solver_curves = {eta: map_seeds(solvers, solver_keys, jnp.asarray(eta)).mean(0)  # [solvers, steps + 1]
                   for eta in SOLVER_ETAS}
  results["solvers"] = {"seeds": solver_seeds, "steps": steps, "mean_gap": {
      str(eta): {s: c[i].tolist() for i, s in enumerate(nlhf.SOLVERS)} for eta, c in solver_curves.items()}}
  progress("nash: offline NLHF")
  offline_run = per_seed(lambda k, coverage: offline_seed(k, coverage, n_off))
  off_keys = jax.random.split(k_off, seeds)
  offline = {name: map_seeds(offline_run, off_keys, jnp.int32(i)) for i, name in enumerate(COVERAGES)}
  results["offline"] = {"n_off": n_off, "betas": PESSIMISM_BETAS, **{
      name: {"gap": [mean_and_stderr(o["gaps"][:, i]) for i in range(len(PESSIMISM_BETAS) + 1)],
             "pessimism_minus_plug_in": [paired(o["gaps"][:, i], o["gaps"][:, 0])
                                         for i in range(1, len(PESSIMISM_BETAS))],
             "unseen_mass": [mean_and_stderr(o["unseen_mass"][:, i]) for i in range(len(PESSIMISM_BETAS) + 1)],
             "nash_unseen_mass": mean_and_stderr(o["nash_unseen_mass"]), "ref_gap": mean_and_stderr(o["ref_gap"])}
      for name, o in offline.items()}}
  progress("nash: online NLHF")
  on_keys = jax.random.split(k_on, online_seeds)
  online_run = per_seed(lambda k, enhancer: online_seed(k, enhancer, num_iterations, batch_size))
  online = {e: map_seeds(online_run, on_keys, jnp.int32(i)) for i, e in enumerate(nlhf.ENHANCERS)}
  results["online"] = {"seeds": online_seeds, "num_iterations": num_iterations, "batch_size": batch_size,
                       **{e: {"gap": mean_and_stderr(o["gap"]), "curve": o["curve"].mean(0).tolist()}
                          for e, o in online.items()},
                       "uncertainty_minus": {e: paired(online["uncertainty"]["gap"], online[e]["gap"])
                                             for e in nlhf.ENHANCERS[1:]},
                       "min_enhancer_slack": float(online["uncertainty"]["slack"].min())}
  progress("nash: reward-based RLHF vs NLHF")
  rew_keys = jax.random.split(k_rew, seeds)
  n_rew = 500
  reward_run = per_seed(lambda k, intransitivity: reward_vs_nash_seed(k, intransitivity, n_rew))
  reward_vs = {a: map_seeds(reward_run, rew_keys, jnp.asarray(a)) for a in REWARD_VS_NASH}
  results["reward_vs_nlhf"] = {"n": n_rew, **{str(a): {k: mean_and_stderr(v) for k, v in o.items()}
                                              for a, o in reward_vs.items()},
                               "nlhf_minus_rlhf": {str(a): paired(o["nlhf_gap"], o["rlhf_gap"])
                                                   for a, o in reward_vs.items()}}
  return results, {"solver_curves": solver_curves}


def claims(results):
  seeds, n_off = results["seeds"], results["offline"]["n_off"]
  steps, solver_seeds = results["solvers"]["steps"], results["solvers"]["seeds"]
  claims = []
  for eta, curves in results["solvers"]["mean_gap"].items():
    c = np.array([curves[s] for s in nlhf.SOLVERS])
    end = {s: c[i, -1] for i, s in enumerate(nlhf.SOLVERS)}
    claims.append(sanity_check(f"Game solvers at η = {eta} (mean duality gap after {steps} steps, {solver_seeds} games, "
                               "start π0, step 1/(η+1))",
                               ", ".join(f"{s} {v:.1e}" for s, v in end.items()) + f" (π0: {c[0, 0]:.1e})",
                               "extragradient converges" if end["extragradient"] < 1e-4 * c[0, 0]
                               else "extragradient NOT converged",
                               "extragradient converges linearly on this strongly monotone game; verdict: the gap is "
                               "below 1e-4 of π0's"))
    claims.append(finding(f"SPPO's multiplicative weights ignore π0 (η = {eta})",
                          f"least gap along the way {c[3].min():.1e}, final {end['sppo']:.1e}",
                          "does not converge to the regularized NE" if end["sppo"] > 1e-6 else "converges",
                          "SPPO's final gap is below 1e-6"))

  for name, o in results["offline"].items():
    if name not in COVERAGES:
      continue
    diffs = o["pessimism_minus_plug_in"]
    helps = [b for b, sig in zip(PESSIMISM_BETAS[1:], holm_significant(diffs)) if sig]
    claims.append(finding(f"Offline NLHF, D_off from {name} ({n_off} pairs, {seeds} seeds): duality gap of the plug-in "
                   "NE vs the pessimistic max-min policy (β sweep) vs the BT reward's Gibbs policy",
                   f"plug-in {fmt(o['gap'][0])}; pessimism − plug-in at β = " +
                   ", ".join(f"{b}: {fmt(d)}" for b, d in zip(PESSIMISM_BETAS[1:], diffs)) +
                   f"; RLHF {fmt(o['gap'][-1])}; π0 {fmt(o['ref_gap'])}",
                   (f"pessimism helps (β ∈ {{{', '.join(str(b) for b in helps)}}})" if helps
                    else "pessimism does not help here") + f" (Holm over {len(diffs)} β)",
                   "no β makes the pessimistic policy's gap significantly smaller than the plug-in's"))
  miss = results["offline"]["misses_nash"]
  claims.append(finding("Offline NLHF when D_off never shows the NE's top 2 actions: mass put there",
                 f"NE {fmt(miss['nash_unseen_mass'], 3)}; plug-in {fmt(miss['unseen_mass'][0], 3)}; pessimistic β = "
                 f"{PESSIMISM_BETAS[-1]} {fmt(miss['unseen_mass'][-2], 3)}; RLHF {fmt(miss['unseen_mass'][-1], 3)}",
                 "linear ψ generalizes to unseen actions" if miss["unseen_mass"][0][0] > 0.5 * miss["nash_unseen_mass"][0]
                 else "unseen actions under-weighted",
                 "the plug-in puts less than half the NE's mass on the unseen actions"))

  online_seeds, num_iterations, batch_size = (results["online"][k] for k in ("seeds", "num_iterations", "batch_size"))
  r = results["online"]
  budget = num_iterations * batch_size
  wins = [e for e, sig in zip(r["uncertainty_minus"], holm_significant(list(r["uncertainty_minus"].values()))) if sig]
  claims.append(finding(f"Online NLHF ({num_iterations}×{batch_size} queries, no D_off, {online_seeds} seeds): duality gap of "
                 "the NE of the final MLE, uncertainty enhancer vs π2 = π0, random pairs, offline π0 pairs "
                 f"({budget} queries)",
                 ", ".join(f"{e} {fmt(r[e]['gap'])}" for e in nlhf.ENHANCERS) + "; enhancer − other (paired): " +
                 ", ".join(f"{e} {fmt(d)}" for e, d in r["uncertainty_minus"].items()),
                 (f"enhancer significantly better than {', '.join(wins)}" if wins
                  else "enhancer not significantly better than any baseline")
                 + f" (Holm over {len(r['uncertainty_minus'])} comparisons)",
                 "the enhancer is not significantly better than the baselines"))
  claims.append(sanity_check("The NLHF enhancer satisfies its KL constraint (slack Γ − ηΣKL ≥ 0)",
                             f"least slack {r['min_enhancer_slack']:.2e}",
                             "holds" if r["min_enhancer_slack"] >= -1e-9 else "fails",
                             "only feasible candidates are returned"))

  n_rew = results["reward_vs_nlhf"]["n"]
  for a in REWARD_VS_NASH:
    rv = results["reward_vs_nlhf"][str(a)]
    d = results["reward_vs_nlhf"]["nlhf_minus_rlhf"][str(a)]
    claims.append(finding(f"Reward-based RLHF vs NLHF, intransitivity {a} ({'Bradley-Terry' if a == 0 else 'intransitive'} "
                   f"P*, {n_rew} pairs from π0, {seeds} seeds): duality gap in the true game",
                   f"NLHF {fmt(rv['nlhf_gap'])}, RLHF {fmt(rv['rlhf_gap'])} (true BT part: {fmt(rv['true_reward_gap'])}), "
                   f"π0 {fmt(rv['ref_gap'])}; NLHF − RLHF {fmt(d)}; NLHF wins {rv['nlhf_win_rate'][0]:.3f} of comparisons "
                   f"against RLHF; suboptimality in the reward objective J of r = ⟨w*, φ⟩: NLHF "
                   f"{fmt(rv['nlhf_reward_suboptimality'])}, RLHF {fmt(rv['rlhf_reward_suboptimality'])}",
                   sign_verdict(d, "NLHF better", "RLHF better", "no difference"),
                   "the RLHF policy's duality gap is not significantly larger than NLHF's"))

  return claims


def figures(results, arrays):
  plt = pyplot()
  solver_curves, r, n_off = arrays["solver_curves"], results["online"], results["offline"]["n_off"]
  queries = np.arange(r["num_iterations"] + 1) * r["batch_size"]
  fig, axes = plt.subplots(1, 3, figsize=(15, 4))
  for eta, ls in zip(SOLVER_ETAS, ("-", "--")):
    for i, s in enumerate(nlhf.SOLVERS):
      axes[0].semilogy(np.maximum(solver_curves[eta][i], 1e-17), ls, color=f"C{i}", label=f"{s}, η={eta}")
  axes[0].set_xlabel("iteration")
  axes[0].set_ylabel("mean duality gap")
  axes[0].set_title("game solvers from π0")
  axes[0].legend(fontsize=7)
  for e in nlhf.ENHANCERS:
    axes[1].plot(queries, r[e]["curve"], "o-", label=e)
  axes[1].set_xlabel("queries")
  axes[1].set_ylabel("duality gap of the main agent")
  axes[1].set_title("online NLHF")
  axes[1].legend()
  width = 0.35
  labels = [f"β={b}" for b in PESSIMISM_BETAS] + ["RLHF"]
  for j, name in enumerate(COVERAGES):
    means = [m for m, _ in results["offline"][name]["gap"]]
    axes[2].bar(np.arange(len(labels)) + j * width, means, width, label=f"D_off from {name}")
  axes[2].set_xticks(np.arange(len(labels)) + width / 2, labels, fontsize=8)
  axes[2].set_ylabel("duality gap")
  axes[2].set_title(f"offline NLHF, {n_off} pairs")
  axes[2].legend()
  fig.tight_layout()
  return {"nash.png": fig}
