"""The `core` experiment: the statistical claims the gshf_jax core rests on, measured on random linear
Bradley-Terry instances (Section 2.2-2.3, Lemma G.3, NLHF); rejection sampling and best-of-n are the `rejection` experiment.

compute() measures, claims() reads the measurements as claim rows, figures() plots them; nothing is asserted.
"""

import jax
import jax.numpy as jnp
import numpy as np

import gshf_jax as g
from bandit_sim.experiments._common import finding, log_log_slope, over_seeds, pyplot, sanity_check


def random_bt_data(key, n, d, theta_star):
  """n comparisons: phi1, phi2 uniform-ish in the unit ball, y ~ Bernoulli(sigmoid(<theta*, dphi>))."""
  k1, k2 = jax.random.split(key)
  phi = jax.random.normal(k1, (2, n, d))
  phi = phi / jnp.maximum(1.0, jnp.linalg.norm(phi, axis=-1, keepdims=True))
  dphi = phi[0] - phi[1]
  y = jax.random.bernoulli(k2, jax.nn.sigmoid(dphi @ theta_star)).astype(dphi.dtype)
  return dphi, y


def mle_errors(key, sizes, *, seeds, dim, bound, lam):
  """Per seed and n: ||theta_MLE - theta*||_2 and ||theta_MLE - theta*||_{Sigma_D} (Eq. (3), Lemma G.3)."""

  def one(key, n):
    k_theta, k_data = jax.random.split(key)
    theta_star = jax.random.normal(k_theta, (dim,))
    theta_star = theta_star / jnp.linalg.norm(theta_star)  # ||theta*|| = 1 <= bound
    dphi, y = random_bt_data(k_data, n, dim, theta_star)
    info = g.bt_mle(dphi, y, bound, return_info=True)
    err = info.theta - theta_star
    sigma_norm = jnp.sqrt(err @ g.covariance(dphi, lam) @ err)
    return jnp.linalg.norm(err), sigma_norm, info.converged

  out = [over_seeds(one, key, seeds, n) for n in sizes]
  l2, sigma, converged = (np.stack([np.asarray(o[i]) for o in out]) for i in range(3))
  return l2, sigma, converged  # each [len(sizes), seeds]


def check_mle(key, *, seeds, quick):
  dim, bound, lam, delta = 4, 2.0, 1.0, 0.05
  sizes = np.array([100, 400, 1600] if quick else [100, 400, 1600, 6400])
  l2, sigma, converged = mle_errors(key, sizes, seeds=seeds, dim=dim, bound=bound, lam=lam)
  slope, interval = log_log_slope(sizes, l2, np.random.default_rng(0))
  # The smallest n is pre-asymptotic (higher-order terms of the MLE error); the rate is fitted without it.
  tail_slope, tail_interval = log_log_slope(sizes[1:], l2[1:], np.random.default_rng(1))
  beta = float(g.confidence_radius(dim, delta, bound, lam))
  coverage = (sigma <= beta).mean(1)
  return {
      "sizes": sizes.tolist(), "seeds": seeds, "dim": dim, "bound": bound, "lam": lam, "delta": delta,
      "mean_l2_error": l2.mean(1).tolist(), "slope_all_n": slope, "slope_all_n_ci95": interval,
      "slope": tail_slope, "slope_ci95": tail_interval,
      "all_converged": bool(converged.all()),
      "beta_C1": beta, "coverage": coverage.tolist(),
      "median_sigma_error_over_beta": np.median(sigma / beta, axis=1).tolist(),
  }, l2


def check_nash(key, *, quick):
  """NLHF: duality gap reached by nash_equilibrium on random intransitive games, and KL(pi* || pi0)."""
  x, k = (8, 6) if quick else (32, 8)
  k1, k2 = jax.random.split(key)
  s = jax.random.normal(k1, (x, k, k)) * 2
  pref = jax.nn.sigmoid(s - jnp.swapaxes(s, -1, -2))
  ref = jax.nn.log_softmax(jax.random.normal(k2, (x, k)), axis=-1)
  rows = []
  for eta in (0.01, 0.1, 1.0, 10.0):
    logp, gap = g.nash_equilibrium(ref, pref, eta)
    worst = float(jnp.max(g.duality_gap(logp, ref, pref, eta, per_context=True)))
    rows.append({"eta": eta, "mean_gap": float(gap), "max_gap": worst,
                 "mean_kl_to_ref": float(jnp.mean(g.kl(logp, ref)))})
  return {"contexts": x, "actions": k, "rows": rows}


def compute(key, *, seeds, quick, progress):
  """Returns (results, arrays): the numbers of summary.json, and the per-seed MLE errors for the plot."""
  keys = jax.random.split(key, 2)
  progress("core: BT MLE rate and confidence radius")
  mle, l2 = check_mle(keys[0], seeds=seeds, quick=quick)
  progress("core: Nash equilibrium")
  nash = check_nash(keys[1], quick=quick)
  return {"mle": mle, "nash": nash}, {"l2": l2}


def claims(results):
  mle, nash = results["mle"], results["nash"]
  lo, hi = mle["slope_ci95"]
  worst = max(r["max_gap"] for r in nash["rows"])
  return [
      finding("MLE error ~ n^-1/2 (Lemma G.3)",
              f"slope over n >= {mle['sizes'][1]}: {mle['slope']:.3f}, 95% CI [{lo:.3f}, {hi:.3f}] "
              f"(all n: {mle['slope_all_n']:.3f})",
              "consistent" if lo <= -0.5 <= hi else "NOT consistent with -0.5",
              "the slope's 95% interval excludes -0.5"),
      finding("‖theta_MLE - theta*‖_Sigma <= beta with C = 1, delta = 0.05",
              "coverage " + ", ".join(f"{c:.3f}" for c in mle["coverage"]) +
              "; median ratio to beta " + ", ".join(f"{r:.3f}" for r in mle["median_sigma_error_over_beta"]),
              "holds" if min(mle["coverage"]) >= 0.95 else "fails at C = 1",
              "the coverage falls below 1 - delta at some n (the constant C = 1 is a choice, not the lemma's)"),
      sanity_check("Nash solver reaches duality gap <= 1e-10 for eta in {0.01, 0.1, 1, 10}",
                   f"worst per-context gap {worst:.1e}", "holds" if worst <= 1e-10 else "fails",
                   "the solver iterates until the gap is below its tolerance"),
  ]


def figures(results, arrays):
  plt = pyplot()
  mle, l2 = results["mle"], arrays["l2"]
  fig, ax = plt.subplots(figsize=(5, 4))
  sizes = np.array(mle["sizes"])
  ax.loglog(sizes, l2.mean(1), "o-", label="mean ||theta_MLE - theta*||")
  ax.loglog(sizes, l2.mean(1)[0] * np.sqrt(sizes[0] / sizes), "--", label="n^-1/2 reference")
  ax.set_xlabel("comparisons n")
  ax.set_title(f"BT MLE error (slope {mle['slope']:.2f})")
  ax.legend()
  return {"core.png": fig}
