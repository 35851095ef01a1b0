"""The `coverage` experiment: Appendix E.1, DPO's population optimum when pi_off covers pi* and when it
does not, next to pessimistic DPO (Eq. (10)) and the linear Gibbs class.

With infinitely many pairs from pi_off, the tabular DPO loss pins pi / pi* to a constant on supp(pi_off)
(Lemma E.1) and says nothing on Omega_x = supp(pi*) \\ supp(pi_off). Each policy below is the L-BFGS
minimizer of the exact population loss from a different initialization; the loss gap to the closed-form
minimum certifies that each is a minimizer.
"""

import jax
import jax.numpy as jnp

import gshf_jax as g
from bandit_sim import env as bandit
from bandit_sim import offline
from bandit_sim.experiments._common import (
  COVERAGES,
  ENV,
  LAM,
  behaviour_policy,
  finding,
  mean_and_stderr,
  measurement,
  over_seeds,
  pyplot,
  sanity_check,
)

PESSIMISM, N_FOR_SIGMA = 1.0, 100
MAX_SEEDS = 20  # exact population quantities: seeds only show that nothing hinges on one instance
INITS = ("pi0", "uniform", "random")
CASES = {"pi0": "π_off = π0 (covers π*)", "misses_pi_star": "π_off misses π*'s top 2 (Ω_x ≠ ∅)"}


def population_covariance(env, behaviour_logp, n):
  """Sigma = lam I + n E_{x ~ d0} E_{a1, a2 ~ pi_off iid}[dphi dphi^T], dphi = phi(x, a1) - phi(x, a2):
  the expected Sigma_off of n pairs; E[dphi dphi^T] = 2 (E[phi phi^T] - E[phi] E[phi]^T) per context."""
  p = jnp.exp(behaviour_logp)
  mean = jnp.einsum("xk,xkd->xd", p, env.features)
  second = jnp.einsum("xk,xkd,xke->xde", p, env.features, env.features)
  per_context = 2 * (second - jnp.einsum("xd,xe->xde", mean, mean))
  return LAM * jnp.eye(env.features.shape[-1]) + n * jnp.einsum("x,xde->de", env.context_probs, per_context)


def one_seed(key):
  """Per seed, for both cases and every initialization: tabular DPO and pessimistic DPO at the
  population optimum (loss gap, mass on Omega_x, spread of log pi/target on the covered actions,
  suboptimality), and the linear Gibbs class (r_MLE = r* in population) with Option II. The 2 x 2 x 3
  solves are one vmapped L-BFGS."""
  k_env, k_init = jax.random.split(key)
  env = bandit.make_linear_bandit(k_env, **ENV)
  star = bandit.optimal_logp(env)
  inits = jnp.stack([env.ref_logp, jnp.zeros_like(env.ref_logp),
                     2.0 * jax.random.normal(k_init, env.ref_logp.shape, env.ref_logp.dtype)])  # INITS

  def case_quantities(case_index):
    behaviour = behaviour_policy(env, case_index)
    bonus = offline.uncertainty_bonus(env, population_covariance(env, behaviour, N_FOR_SIGMA),
                                      offline.reference_vector(env))  # nu = E phi(pi0), Theorem 3.1's default
    option_two = g.gibbs_logprobs(env.ref_logp, bandit.rewards(env, env.theta_star) - PESSIMISM * bonus, env.eta)
    return behaviour, bonus, option_two

  def solve(case_index, scale, init):
    behaviour, bonus, option_two = case_quantities(case_index)
    covered = behaviour > -jnp.inf
    logp = offline.fit_population_dpo(env, behaviour, init, bonus=bonus, bonus_scale=scale)
    ratio = jnp.where(covered, logp - jnp.where(scale > 0, option_two, star), jnp.nan)
    return {"loss_gap": offline.population_dpo_loss(env, logp, behaviour, bonus=bonus, bonus_scale=scale)
                        - offline.population_dpo_minimum(env, behaviour),
            "uncovered_mass": env.context_probs @ jnp.sum(jnp.where(covered, 0.0, jnp.exp(logp)), -1),
            "covered_log_ratio_spread": jnp.max(jnp.nanmax(ratio, -1) - jnp.nanmin(ratio, -1)),
            "subopt": bandit.suboptimality(env, logp)}

  cases = jnp.array([COVERAGES.index(c) for c in CASES])
  grid = jnp.meshgrid(cases, jnp.array([0.0, PESSIMISM]), jnp.arange(len(INITS)), indexing="ij")
  solved = jax.vmap(lambda c, b, i: solve(c, b, inits[i]))(*(v.reshape(-1) for v in grid))
  out = {}
  for flat, (case, method, init_name) in enumerate(
      (c, m, i) for c in CASES for m in ("dpo", "pdpo") for i in INITS):
    out.update({f"{case}/{method}/{init_name}/{k}": v[flat] for k, v in solved.items()})
  for case_index, case in zip(cases, CASES):
    behaviour, _, option_two = case_quantities(case_index)
    uncovered = jnp.where(behaviour > -jnp.inf, 0.0, 1.0)
    out[f"{case}/uncovered_mass_optimal"] = env.context_probs @ jnp.sum(uncovered * jnp.exp(star), -1)
    out[f"{case}/linear_II_subopt"] = bandit.suboptimality(env, option_two)
    out[f"{case}/linear_II_uncovered_mass"] = env.context_probs @ jnp.sum(uncovered * jnp.exp(option_two), -1)
  return out


def compute(key, *, seeds, quick, progress):
  """Appendix E.1 over seeds; returns (results, arrays) (every number is in results)."""
  progress("coverage: population DPO optima")
  seeds = min(seeds, 8 if quick else MAX_SEEDS)
  out = over_seeds(one_seed, key, seeds)
  results = {"env": ENV, "pessimism": PESSIMISM, "n_for_sigma": N_FOR_SIGMA, "seeds": seeds,
             "max_loss_gap": float(max(v.max() for k, v in out.items() if k.endswith("loss_gap"))),
             **{k: mean_and_stderr(v) for k, v in out.items()},
             "max_covered_log_ratio_spread": {
                 f"{case}/{method}": float(max(out[f"{case}/{method}/{i}/covered_log_ratio_spread"].max() for i in INITS))
                 for case in CASES for method in ("dpo", "pdpo")}}
  return results, {}


def claims(results):
  claims = []
  gap_ok = results["max_loss_gap"] < 1e-8
  for case, label in CASES.items():
    for method, name in (("dpo", "DPO"), ("pdpo", f"pessimistic DPO (β = {PESSIMISM:g})")):
      masses = {i: results[f"{case}/{method}/{i}/uncovered_mass"][0] for i in INITS}
      subopts = {i: results[f"{case}/{method}/{i}/subopt"][0] for i in INITS}
      spread = results["max_covered_log_ratio_spread"][f"{case}/{method}"]
      claim = f"Appendix E.1, {label}: {name}'s population optimum from {len(INITS)} starts"
      measured = (f"mass on Ω_x (π*: {results[f'{case}/uncovered_mass_optimal'][0]:.3f}) "
                  + ", ".join(f"{i} {m:.3f}" for i, m in masses.items()) + "; suboptimality "
                  + ", ".join(f"{i} {s:.3f}" for i, s in subopts.items()) + f"; covered log-ratio spread ≤ {spread:.1e}")
      if case == "pi0":
        verdict = "unique optimum, = π*" if method == "dpo" and max(subopts.values()) < 1e-8 else (
            "unique optimum" if max(subopts.values()) - min(subopts.values()) < 1e-8 else "depends on the start")
        claims.append(sanity_check(claim, measured, verdict, "Lemma E.1: with full support the loss is strictly "
                                   "convex in log π and DPO's optimum is π*"))
      else:
        verdict = ("mass on Ω_x set by the initialization alone" if max(masses.values()) - min(masses.values()) > 0.01
                   else "mass on Ω_x does not depend on the start")
        claims.append(finding(claim, measured, verdict, "every start puts the same mass on Ω_x"))
  claims.append(sanity_check("every start reaches the closed-form minimum of the population loss (Lemma E.1)",
                             f"max loss gap {results['max_loss_gap']:.1e}", "certified" if gap_ok else "NOT reached",
                             "the minimum is known in closed form, and L-BFGS reaches it"))
  lin = results["misses_pi_star/linear_II_subopt"], results["misses_pi_star/linear_II_uncovered_mass"]
  claims.append(measurement("linear Gibbs class, same population data missing π*'s top 2",
                            f"plug-in = π* (θ identified through φ); Option II (β = {PESSIMISM:g}, ν = E φ(π0)) "
                            f"suboptimality {lin[0][0]:.3f}, mass on Ω_x {lin[1][0]:.3f}",
                            "in the linear class the features, not pessimism, fix the unseen actions"))
  return claims


def figures(results, arrays):
  plt = pyplot()
  lin = results["misses_pi_star/linear_II_subopt"], results["misses_pi_star/linear_II_uncovered_mass"]
  fig, ax = plt.subplots(figsize=(7, 4))
  labels, values, errors = [], [], []
  for method in ("dpo", "pdpo"):
    for i in INITS:
      labels.append(f"{method}\n{i}")
      values.append(results[f"misses_pi_star/{method}/{i}/uncovered_mass"][0])
      errors.append(2 * results[f"misses_pi_star/{method}/{i}/uncovered_mass"][1])
  ax.bar(labels, values, yerr=errors, color=["C0"] * 3 + ["C1"] * 3)
  ax.axhline(results["misses_pi_star/uncovered_mass_optimal"][0], color="k", ls="--", label="π*")
  ax.axhline(lin[1][0], color="C2", ls=":", label="Option II, linear class")
  ax.set_ylabel("mass on actions π_off never shows")
  ax.set_title("Appendix E.1: population DPO optimum by initialization")
  ax.legend()
  return {"coverage.png": fig}
