"""The `rejection` experiment: Figure 3 and Appendix E.2 (rejection sampling and multi-step RSO), offline
pseudo-labelling (SFT, DPO, RSO, multi-step RSO, each selected over training lengths on the same validation
draws), and best-of-n (Section 5.2).

Nothing is asserted; everything measured is reported, including where it disagrees with the paper.
"""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

import gshf_jax as g
from bandit_sim import env as bandit
from bandit_sim import mixture, offline, online, rso
from bandit_sim.experiments._common import (
  finding,
  fmt,
  mean_and_stderr,
  measurement,
  pyplot,
  sanity_check,
  sign_verdict,
)

DIRECTION = (1.0, 0.0)  # the Figure-1 model's reward direction, r(a) = [1, 0]^T a
# The pseudo-labelling bandit: reward range ~1 per context and eta = 0.1, the paper's worked example,
# Table 8's RSO (coefficient 0.5, 8 candidates - 2 accepted) and KL path 0.5 -> 0.3 -> 0.1.
PSEUDO_ENV = dict(num_contexts=20, num_actions=16, dim=4, bound=1.0, eta=0.1)
N_OFF, LAM, KL_PATH = 200, 1.0, (0.5, 0.3, 0.1)
GAP_PROPOSALS = ("one_step", "path_exact", "path_trained", "rso_table8")
METHOD_SEEDS, GAP_SEEDS = 60, 10
# Every trained method is trained for each length (Adam, cosine decay to 0 at the end) and its output is the
# length whose policy scores best on VALIDATION Monte Carlo draws of the gold reward (the paper selects its
# DPO checkpoints by gold reward on a validation set, Appendix H); the longest is also reported as is.
STEP_GRID, VALIDATION = (50, 100, 200, 500), 1000
UNTRAINED = ("pi0", "plug_in")
METHODS = {"pi0": "π0", "sft": "SFT on preferred", "dpo": "offline DPO", "rso": "RSO (coef 0.5, DPO)",
           "rso_hinge": "RSO (coef 0.5, hinge)", "rso_exact": "RSO (coef η = 0.1)",
           "multistep": "multi-step RSO (path coefs)", "multistep_3": "multi-step RSO (coef 3, Table 8)",
           "plug_in": "Gibbs policy of r_MLE"}


def mixture_acceptance(key, eta, step_counts, num_candidates, num_pools):
  """Figure 3 on the Figure-1 model: per-step pool acceptance (mixture.pool_acceptance) along
  multistep_etas(eta, N); step i proposes from the exact pi0 exp(r / eta_{i-1})."""
  mix, c = mixture.figure_one_mixture(), jnp.asarray(DIRECTION)
  out = {}
  for n in step_counts:
    path = np.asarray(g.multistep_etas(eta, n))
    per_step = []
    for i, coef in enumerate(np.asarray(rso.step_coefficients(path))):
      proposal = mixture.tilt(mix, c, float(path[i - 1]) if i else float("inf"))
      mean, se = mixture.pool_acceptance(jax.random.fold_in(key, 100 * n + i), proposal, c, float(coef),
                                         num_candidates, num_pools)
      per_step.append((float(mean), float(se)))
    out[n] = per_step
  return out


def soft_and_mean_gaps(ref_logp, reward, eta):
  """r_x of Appendix E.2 two ways: max r - E_{pi0} r, and max r - eta log E_{pi0} exp(r / eta)."""
  top = jnp.max(reward, -1)
  return top - jnp.sum(jnp.exp(ref_logp) * reward, -1), top - eta * jax.nn.logsumexp(ref_logp + reward / eta, -1)


@functools.partial(jax.jit, static_argnames=("eta", "max_steps"))
def per_step_bound_check(ref_logp, reward, eta, max_steps):
  """For every context, the smallest per-step acceptance with N = ceil(r_x / eta) + 1 steps, for both
  definitions of r_x (soft_and_mean_gaps). Returns ([X] mean-gap minima, [X] soft-gap minima)."""
  minima = jnp.stack([jnp.min(rso.multistep_acceptance(ref_logp, reward, g.multistep_etas(eta, n)), 0)
                      for n in range(1, max_steps + 1)])  # [max_steps, X]
  steps = [jnp.clip(jnp.ceil(gap / eta).astype(int) + 1, 1, max_steps) for gap in soft_and_mean_gaps(ref_logp, reward, eta)]
  return tuple(jnp.take_along_axis(minima, (s - 1)[None], 0)[0] for s in steps)


def make_pseudo_seed(key):
  """An instance with eta = 0.1 and reward range ~1, N_OFF pairs from pi0, and the proxy r_MLE."""
  k_env, k_data = jax.random.split(key)
  env = bandit.make_linear_bandit(k_env, **PSEUDO_ENV)
  data = bandit.collect_preferences(k_data, env, env.ref_logp, env.ref_logp, N_OFF)
  return env, data, bandit.rewards(env, offline.fit_offline(env, data, lam=LAM).theta_mle)


def pseudo_label_methods(key, steps):
  """Per seed, every method of METHODS at the same human budget (N_OFF pairs from pi0): suboptimality,
  reward E r* and KL to pi0, plus the pseudo-pairs' duplicate share."""
  k_seed, k_rso, k_exact, k_ms = jax.random.split(key, 4)
  env, data, proxy = make_pseudo_seed(k_seed)
  common = dict(num_prompts=N_OFF, steps=steps)
  runs = {"rso": rso.multistep_rso(k_rso, env, proxy, eta_path=(env.eta,), coef=0.5, **common),
          "rso_hinge": rso.multistep_rso(k_rso, env, proxy, eta_path=(env.eta,), coef=0.5, loss="hinge", **common),
          "rso_exact": rso.multistep_rso(k_exact, env, proxy, eta_path=(env.eta,), coef=env.eta, **common),
          "multistep": rso.multistep_rso(k_ms, env, proxy, eta_path=KL_PATH, **common),
          "multistep_3": rso.multistep_rso(k_ms, env, proxy, eta_path=KL_PATH, coef=3.0, **common)}
  policies = {"pi0": env.ref_logp, "sft": rso.sft(env, data, steps=steps),
              "dpo": offline.offline_dpo(env, data, param="tabular", steps=steps).logp,
              **{name: run.logp for name, run in runs.items()},
              "plug_in": g.gibbs_logprobs(env.ref_logp, proxy, env.eta)}
  r_star = bandit.rewards(env, env.theta_star)
  out = {}
  for name, logp in policies.items():
    out[f"subopt_{name}"] = bandit.suboptimality(env, logp)
    out[f"reward_{name}"] = env.context_probs @ g.gibbs.expectation(logp, r_star)
    out[f"kl_{name}"] = env.context_probs @ g.kl(logp, env.ref_logp)
    # the same validation draws for every method and training length (online.validation_value, as Algorithm 2)
    out[f"validation_{name}"] = online.validation_value(jax.random.fold_in(key, 1), env, logp, VALIDATION)
  out.update({f"duplicates_{name}": run.duplicate_fraction for name, run in runs.items()})
  out["multistep_step_policies"] = runs["multistep"].step_logp
  return out


def select_training_length(by_length):
  """Per seed and method, the training length whose policy has the highest validation estimate (early
  stopping on a grid, the same validation budget for every method); by_length: pseudo_label_methods'
  outputs, one per length. Returns {f"subopt_{name}", f"reward_{name}", f"kl_{name}", f"length_{name}"}."""
  out = {}
  for name in METHODS:
    best = np.argmax(np.stack([o[f"validation_{name}"] for o in by_length]), 0)  # [seeds]
    for quantity in ("subopt", "reward", "kl"):
      values = np.stack([o[f"{quantity}_{name}"] for o in by_length])
      out[f"{quantity}_{name}"] = values[best, np.arange(values.shape[1])]
    out[f"length_{name}"] = best
  return out


def sampling_gap(key, trained_step_two, candidate_counts, draws):
  """Appendix E.2's failure mode, per seed: TV between the law of RSO's accepted samples (2 per pool) and
  the target pi_{r_MLE} at eta = 0.1, for K candidates from pi0 (one step, coefficient 0.1), from the exact
  pi0 exp(r/0.3) (last step of the path, coefficient 0.15), from multi-step RSO's trained step-2 policy
  `trained_step_two` (of pseudo_label_methods with the same key), and Table 8's RSO (coefficient 0.5 from
  pi0); plus the noise floor (as many exact draws from the target) and each proposal's exact acceptance."""
  env, _, proxy = make_pseudo_seed(jax.random.split(key, 4)[0])  # pseudo_label_methods' instance
  k_law, k_floor = jax.random.split(jax.random.fold_in(key, 1))
  target = jnp.exp(g.gibbs_logprobs(env.ref_logp, proxy, env.eta))
  last_coef = 1 / (1 / KL_PATH[-1] - 1 / KL_PATH[-2])  # rso.step_coefficients(KL_PATH)[-1], as a constant
  proposals = jnp.stack([env.ref_logp, g.gibbs_logprobs(env.ref_logp, proxy, KL_PATH[-2]), trained_step_two,
                         env.ref_logp])  # GAP_PROPOSALS
  coefs = jnp.array([env.eta, last_coef, last_coef, 0.5])
  tv = lambda law: env.context_probs @ rso.total_variation(law, target)
  out = {"acceptance": jax.vmap(lambda p, c: env.context_probs @ g.acceptance_rate(p, proxy, c))(proposals, coefs)}
  out["tv"] = jnp.stack([jax.vmap(lambda p, c: tv(rso.accepted_law(
      jax.random.fold_in(k_law, k), p, proxy, c, num_candidates=k, num_accepted=2, draws=draws)))(proposals, coefs)
      for k in candidate_counts], -1)  # [proposal, K]
  exact = jax.random.categorical(k_floor, jnp.log(target), shape=(2 * draws, env.ref_logp.shape[0])).T
  out["tv_floor"] = tv(jax.vmap(lambda s: jnp.bincount(s, length=target.shape[-1]))(exact) / (2 * draws))
  return out


def best_of_n_against_gibbs(key, ns, contexts, actions):
  """Section 5.2: exact KL(best-of-n || pi) and reward gain against log n - (n-1)/n, and the Gibbs policy
  pi exp(r / eta') with the same KL per context (eta' by bisection on log eta'), whose reward gain is the
  most any policy at that KL can get."""
  k1, k2 = jax.random.split(key)
  logp = jax.nn.log_softmax(jax.random.normal(k1, (contexts, actions)), -1)
  reward = jax.random.normal(k2, (contexts, actions))
  base = g.gibbs.expectation(logp, reward)

  def gibbs_at_kl(target_kl):
    kl_at = lambda log_eta: g.kl(g.gibbs_logprobs(logp, reward, jnp.exp(log_eta)[:, None]), logp)
    lo, hi = jnp.full_like(target_kl, -12.0), jnp.full_like(target_kl, 12.0)  # KL decreases in eta

    def bisect(_, bounds):
      lo, hi = bounds
      mid = (lo + hi) / 2
      too_far = kl_at(mid) > target_kl
      return jnp.where(too_far, mid, lo), jnp.where(too_far, hi, mid)

    lo, hi = jax.lax.fori_loop(0, 80, bisect, (lo, hi))
    return g.gibbs.expectation(g.gibbs_logprobs(logp, reward, jnp.exp(hi)[:, None]), reward) - base

  rows = []
  for n in ns:
    bon = g.best_of_n_logprobs(logp, reward, n)
    kl = g.kl(bon, logp)
    gain = g.gibbs.expectation(bon, reward) - base
    gibbs_gain = gibbs_at_kl(kl) if n > 1 else jnp.zeros_like(gain)
    rows.append({"n": n, "bound": float(g.best_of_n_kl_bound(n)), "mean_kl": float(kl.mean()),
                 "max_kl": float(kl.max()), "mean_gain": float(gain.mean()), "mean_gibbs_gain": float(gibbs_gain.mean()),
                 "gibbs_at_least_bon": float(jnp.mean(gibbs_gain >= gain - 1e-9))})
  return {"contexts": contexts, "actions": actions, "rows": rows,
          "bound_holds": all(r["max_kl"] <= r["bound"] + 1e-12 for r in rows)}


def compute(key, *, seeds, quick, progress):
  """Figure 3 and Appendix E.2 (acceptance), the failure mode in TV, pseudo-labelling, best-of-n.
  Returns (results, arrays) (every number is in results)."""
  k_mix, k_bandit, k_methods, k_bon = jax.random.split(key, 4)
  results = {}

  # (a) Appendix E.2's worked numbers, exact.
  progress("rejection: worked example and the N-step bound")
  eta, eps = 0.1, 1e-12
  two_actions = float(g.acceptance_rate(jnp.log(jnp.array([1 - eps, eps])), jnp.array([0.0, 1.0]), eta))
  envs = jax.vmap(lambda k: bandit.make_linear_bandit(k, **PSEUDO_ENV))(jax.random.split(k_bandit, seeds))
  r_star = jax.vmap(bandit.rewards)(envs, envs.theta_star)
  ref = envs.ref_logp.reshape(-1, PSEUDO_ENV["num_actions"])
  r_star = r_star.reshape(ref.shape)
  mean_gap, soft_gap = (np.asarray(v) for v in soft_and_mean_gaps(ref, r_star, eta))
  max_steps = int(np.ceil(mean_gap.max() / eta)) + 1
  by_mean, by_soft = (np.asarray(v) for v in per_step_bound_check(ref, r_star, eta, max_steps))
  one_step = np.asarray(g.acceptance_rate(ref, r_star, eta))
  path10 = np.asarray(rso.multistep_acceptance(ref, r_star, g.multistep_etas(eta, 10)))
  results["acceptance_bandit"] = {
      "contexts": int(ref.shape[0]), "eta": eta, "two_action_example": two_actions,
      "mean_gap": mean_gap.mean().tolist(), "soft_gap": soft_gap.mean().tolist(),
      "one_step_mean": float(one_step.mean()), "one_step_median": float(np.median(one_step)),
      "ten_step_min_per_step": float(path10.min()), "ten_step_mean_per_step": path10.mean(1).tolist(),
      "bound_mean_gap_holds": float(np.mean(by_mean >= math.exp(-1))), "bound_mean_gap_min": float(by_mean.min()),
      "bound_soft_gap_holds": float(np.mean(by_soft >= math.exp(-1))), "bound_soft_gap_min": float(by_soft.min())}

  # (b) Figure 3 on the Figure-1 model (Monte Carlo, pool maximum as the envelope), eta = 1 and 0.1.
  progress("rejection: Figure 3 (Monte Carlo)")
  step_counts, pools = ((1, 2, 4), 4000) if quick else ((1, 2, 4, 8), 20000)
  figure3 = {eta_: mixture_acceptance(jax.random.fold_in(k_mix, i), eta_, step_counts, 8, pools)
             for i, eta_ in enumerate((1.0, 0.1))}
  results["figure3"] = {str(eta_): {str(n): v for n, v in rows.items()} for eta_, rows in figure3.items()}

  # (d) Pseudo-labelling at the same human budget.
  progress("rejection: SFT / DPO / RSO / multi-step RSO")
  lengths = (100, 300) if quick else STEP_GRID
  method_seeds = min(seeds, METHOD_SEEDS)
  method_keys = jax.random.split(k_methods, method_seeds)
  methods = jax.jit(jax.vmap(pseudo_label_methods, in_axes=(0, None)))  # the length is traced: one compilation
  by_length = [jax.tree.map(np.asarray, methods(method_keys, jnp.int32(n))) for n in lengths]
  out, selected = by_length[-1], select_training_length(by_length)
  summary = lambda o: {name: {"subopt": mean_and_stderr(o[f"subopt_{name}"]), "reward": float(o[f"reward_{name}"].mean()),
                              "kl": float(o[f"kl_{name}"].mean())} for name in METHODS}
  differences = lambda o: {
      f"{a_}_minus_{b_}": mean_and_stderr(o[f"subopt_{a_}"] - o[f"subopt_{b_}"])
      for a_, b_ in (("rso", "dpo"), ("multistep", "rso"), ("multistep_3", "rso"), ("sft", "dpo"))}
  results["pseudo_labelling"] = {
      "env": PSEUDO_ENV, "n_off": N_OFF, "kl_path": KL_PATH, "lengths": list(lengths), "seeds": method_seeds,
      "validation_draws": VALIDATION,
      "fixed": {"steps": lengths[-1], "methods": summary(out), **differences(out)},
      "selected": {"methods": summary(selected), **differences(selected),
                   "length_share": {name: np.bincount(selected[f"length_{name}"], minlength=len(lengths)).tolist()
                                    for name in METHODS if name not in UNTRAINED}},
      "duplicate_pair_share": {k[11:]: float(v.mean()) for k, v in out.items() if k.startswith("duplicates_")}}

  # (c) The failure mode: TV of the accepted samples to the target, fixed candidate budget.
  progress("rejection: accepted samples vs target (TV)")
  candidate_counts = (8, 32) if quick else (8, 32, 128)
  gap_seeds, draws = (min(seeds, 4), 200) if quick else (min(seeds, GAP_SEEDS), 500)
  gap_seeds = min(gap_seeds, method_seeds)
  raw = jax.tree.map(np.asarray, jax.jit(jax.vmap(lambda k, p: sampling_gap(k, p, candidate_counts, draws)))(
      method_keys[:gap_seeds], out["multistep_step_policies"][:gap_seeds, -2]))
  gap = {"tv_floor": raw["tv_floor"], **{f"tv_{name}": raw["tv"][:, i] for i, name in enumerate(GAP_PROPOSALS)},
         **{f"acceptance_{name}": raw["acceptance"][:, i] for i, name in enumerate(GAP_PROPOSALS)}}
  results["sampling_gap"] = {"candidates": list(candidate_counts), "seeds": gap_seeds, "draws_per_context": draws,
                             **{k: v.mean(0).tolist() for k, v in gap.items()}}
  results["sampling_gap"]["tv_mean_se"] = {
      name: [mean_and_stderr(gap[f"tv_{name}"][:, i]) for i in range(len(candidate_counts))] for name in GAP_PROPOSALS}

  # (e) Best-of-n.
  progress("rejection: best-of-n")
  ns = (1, 2, 4, 8, 16, 32, 64)
  bon = best_of_n_against_gibbs(k_bon, ns, 50 if quick else 100, 32)
  results["best_of_n"] = bon
  return results, {}


def claims(results):
  two_actions = results["acceptance_bandit"]["two_action_example"]
  claims = [sanity_check("Appendix E.2: reward gap 1, η = 0.1: one-step acceptance ≈ 0.00004",
                         f"{two_actions:.3e} (exp(−10) = {math.exp(-10):.3e})",
                         "matches exp(−10) = 4.5e-5" if abs(two_actions / math.exp(-10) - 1) < 1e-3 else "differs",
                         "the acceptance probability is exp(−gap/η) in closed form")]
  a = results["acceptance_bandit"]
  claims.append(sanity_check("Appendix E.2: N = ⌈r_x/η⌉ + 1 steps accept ≥ exp(−1) at every step (r_x = best − mean reward "
                 "under π0; exact, η = 0.1)",
                 f"{a['bound_mean_gap_holds']:.1%} of {a['contexts']} contexts, least per-step "
                 f"{a['bound_mean_gap_min']:.3f}; one-step mean {a['one_step_mean']:.2e}",
                 "holds" if a["bound_mean_gap_holds"] == 1 else "fails",
                 "Jensen's inequality: with r_x = best − mean every step's acceptance is at least exp(−1)"))
  claims.append(finding("… with r_x = best − η log E_π0 exp(r/η) (the paper's worked assumption)",
                 f"{a['bound_soft_gap_holds']:.1%} of contexts, least per-step {a['bound_soft_gap_min']:.3f}",
                 "holds" if a["bound_soft_gap_holds"] == 1 else
                 "fails on some contexts: the first step's tilt is the hardest, not the average one",
                 "some context's least per-step acceptance is below exp(−1)"))

  figure3 = {float(eta_): {int(n): v for n, v in rows.items()} for eta_, rows in results["figure3"].items()}
  step_counts = list(next(iter(figure3.values())))
  for eta_, rows in figure3.items():
    n_max = step_counts[-1]
    claims.append(finding(f"Figure 3 (mixture, 8 candidates, η = {eta_:g}): acceptance per step rises with N",
                   f"one step {rows[1][0][0]:.3f}±{rows[1][0][1]:.3f}; {n_max} steps: least per-step "
                   f"{min(m for m, _ in rows[n_max]):.3f}",
                   "holds" if min(m for m, _ in rows[n_max]) > rows[1][0][0] else "fails",
                   f"the least per-step acceptance with {n_max} steps is not above the one-step acceptance"))

  p = results["pseudo_labelling"]
  fixed, selected, lengths = p["fixed"], p["selected"], p["lengths"]
  setting = f"pseudo-labelling, {N_OFF} human pairs from π0, η = 0.1, tabular policies, {p['seeds']} seeds"
  claims.append(measurement(f"{setting}: suboptimality, each trained method selected over {lengths} Adam steps by "
                            f"{p['validation_draws']} validation draws of the gold reward (equal selection)",
                            "; ".join(f"{label} {fmt(selected['methods'][name]['subopt'])}"
                                      for name, label in METHODS.items())
                            + "; lengths chosen (count per length): "
                            + ", ".join(f"{k} {v}" for k, v in selected["length_share"].items())))
  claims.append(measurement(f"{setting}: suboptimality after a fixed {fixed['steps']} steps (no selection)",
                            "; ".join(f"{label} {fmt(fixed['methods'][name]['subopt'])}" for name, label in METHODS.items())))
  both = lambda key: f"selected {fmt(selected[key])}; fixed {fixed['steps']} steps {fmt(fixed[key])}"
  claims.append(finding("RSO outperforms DPO (Liu et al. 2023; Appendix E.2), both selected", f"paired RSO − DPO: {both('rso_minus_dpo')}",
                        sign_verdict(selected["rso_minus_dpo"], "holds", "fails"),
                        "RSO − DPO (both selected) is not significantly negative"))
  claims.append(finding("SFT on preferred is the weaker baseline (Appendix E.2), both selected",
                        f"paired SFT − DPO: {both('sft_minus_dpo')}",
                        sign_verdict(selected["sft_minus_dpo"], "SFT beats DPO here", "DPO beats SFT"),
                        "SFT − DPO (both selected) is not significantly positive"))
  claims.append(finding("multi-step RSO improves on RSO (Table 1, Appendix E.2), both selected",
                        f"paired multi-step (path coefs) − RSO: {both('multistep_minus_rso')}; Table 8's coef 3 − RSO: "
                        f"{both('multistep_3_minus_rso')}",
                        sign_verdict(selected["multistep_minus_rso"], "holds", "fails: RSO is better here"),
                        "multi-step − RSO (both selected) is not significantly negative"))

  gap = results["sampling_gap"]
  candidate_counts, floor = gap["candidates"], gap["tv_floor"]
  for i, k in enumerate(candidate_counts):
    tv = {name: gap["tv_mean_se"][name][i] for name in GAP_PROPOSALS}
    closer = lambda name: tv[name][0] + 2 * tv[name][1] < tv["one_step"][0] - 2 * tv["one_step"][1]  # intervals apart
    verdict = ("the exact path closes the gap" if closer("path_exact") else "the exact path does not close it") + (
        "; so does the trained path" if closer("path_trained") else
        "; the trained step-2 policy is itself far from π0e^(r/0.3), so its last step is not closer")
    claims.append(finding(f"Appendix E.2: with {k} candidates, 2 accepted, accepted samples are far from π_r (η = 0.1) in "
                   "one step; the path's last step is closer (TV, mean ± s.e.)",
                   f"one step {fmt(tv['one_step'], 3)}; last step from exact π0e^(r/0.3) {fmt(tv['path_exact'], 3)}; "
                   f"from the trained step-2 policy {fmt(tv['path_trained'], 3)}; Table 8's RSO (coef 0.5) "
                   f"{fmt(tv['rso_table8'], 3)}; noise floor {floor:.3f}",
                   verdict, "the exact path's last-step TV interval overlaps or lies above the one-step one"))
  claims.append(measurement("exact acceptance of one draw: one step vs the path's last step",
                 f"{gap['acceptance_one_step']:.2e} vs {gap['acceptance_path_exact']:.3f} "
                 f"(trained proposal {gap['acceptance_path_trained']:.3f})"))

  bon = results["best_of_n"]
  last = bon["rows"][-1]
  claims.append(sanity_check("Section 5.2: KL(best-of-n ‖ π) ≤ log n − (n−1)/n",
                 f"max KL / bound at n = {last['n']}: {last['max_kl']:.3f} / {last['bound']:.3f}; mean KL "
                 f"{last['mean_kl']:.3f}", "holds" if bon["bound_holds"] else "fails",
                 "a theorem (Beirami et al. 2024) for the exact best-of-n law"))
  claims.append(sanity_check("best-of-n vs the Gibbs policy at the same KL (reward gain over π)",
                 "; ".join(f"n={r['n']}: {r['mean_gain']:.3f} vs {r['mean_gibbs_gain']:.3f}" for r in bon["rows"][1::2]),
                 "Gibbs gains at least as much on every context and n" if min(
                     r["gibbs_at_least_bon"] for r in bon["rows"]) == 1 else "best-of-n wins somewhere",
                 "Lemma G.6: the Gibbs policy maximizes reward at any fixed KL"))

  return claims


def figures(results, arrays):
  """Figure 3 (mixture), TV against candidates, reward-KL of the methods, best-of-n."""
  plt = pyplot()
  figure3 = {float(eta_): {int(n): v for n, v in rows.items()} for eta_, rows in results["figure3"].items()}
  gap, table, bon = results["sampling_gap"], results["pseudo_labelling"]["selected"]["methods"], results["best_of_n"]
  candidate_counts, floor = gap["candidates"], gap["tv_floor"]
  fig, axes = plt.subplots(1, 4, figsize=(20, 4))
  for ax, (eta_, rows) in zip(axes[:2], figure3.items()):
    for n, per_step in rows.items():
      ax.errorbar(np.arange(1, n + 1), [m for m, _ in per_step], [2 * s for _, s in per_step], marker="o", label=f"N = {n}")
    ax.set_title(f"Figure 3: mixture, η = {eta_:g}, 8 candidates")
    ax.set_xlabel("step i (η_i = Nη/i)")
    ax.set_ylabel("acceptance per step")
    ax.legend()
  for name in GAP_PROPOSALS:
    mean_se = np.array(gap["tv_mean_se"][name])
    axes[2].errorbar(candidate_counts, mean_se[:, 0], 2 * mean_se[:, 1], marker="o", label=name.replace("_", " "))
  axes[2].axhline(floor, color="k", ls=":", label="noise floor")
  axes[2].set_xscale("log", base=2)
  axes[2].set_xlabel("candidates per prompt")
  axes[2].set_title("TV(accepted samples, π_r), η = 0.1")
  axes[2].legend()
  for name, label in METHODS.items():
    axes[3].scatter(table[name]["kl"], table[name]["reward"], label=label)
  axes[3].set_xlabel("KL(π ‖ π0)")
  axes[3].set_ylabel("E r*")
  axes[3].set_title("pseudo-labelling: reward vs KL (selected length)")
  axes[3].legend(fontsize=7)
  fig2, ax = plt.subplots(1, 2, figsize=(10, 4))
  ns_ = [r["n"] for r in bon["rows"]]
  ax[0].plot(ns_, [r["bound"] for r in bon["rows"]], "k--", label="log n − (n−1)/n")
  ax[0].plot(ns_, [r["max_kl"] for r in bon["rows"]], "o-", label="max KL over contexts")
  ax[0].plot(ns_, [r["mean_kl"] for r in bon["rows"]], "s-", label="mean KL")
  ax[0].set_xscale("log", base=2)
  ax[0].set_title("KL(best-of-n ‖ π)")
  ax[0].legend()
  ax[1].plot([r["mean_kl"] for r in bon["rows"]], [r["mean_gain"] for r in bon["rows"]], "o-", label="best-of-n")
  ax[1].plot([r["mean_kl"] for r in bon["rows"]], [r["mean_gibbs_gain"] for r in bon["rows"]], "s-", label="Gibbs, same KL")
  ax[1].set_xlabel("KL to π")
  ax[1].set_ylabel("reward gain")
  ax[1].legend()
  return {"rejection.png": fig, "best_of_n.png": fig2}
