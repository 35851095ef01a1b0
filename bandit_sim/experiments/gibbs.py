"""The `gibbs` experiment: Figure 1, a 2-D Gaussian-mixture pi0 tilted by r(a) = [1, 0]^T a for
1/eta in {0.5, 1, 10}, in closed form (shifted means, reweighted components) against a grid normalization.
"""

import jax.numpy as jnp
import numpy as np

from bandit_sim import mixture
from bandit_sim.experiments._common import pyplot, sanity_check

DIRECTION = (1.0, 0.0)  # Figure 1's r(a) = [1, 0]^T a
INVERSE_ETAS = (0.5, 1.0, 10.0)  # Figure 1's panels (b)-(d)
GRID = dict(low=(-5.0, -4.5), high=(9.0, 4.5), shape=(561, 361))


def compute(key, *, seeds, quick, progress):
  """Figure 1: pi0 and pi_r for 1/eta in INVERSE_ETAS, in closed form and by grid normalization.
  Returns (results, arrays) with the panels' log densities for the plot."""
  del key, seeds
  progress("gibbs: closed form vs grid")
  mix, c = mixture.figure_one_mixture(), jnp.asarray(DIRECTION)
  grid = dict(GRID, shape=(281, 181)) if quick else GRID
  points, area, xs, ys = mixture.grid_points(**grid)
  rows, panels = [], [("(a) pretrained π0", mixture.log_density(mix, points))]
  for inverse_eta in INVERSE_ETAS:
    tilted = mixture.tilt(mix, c, 1 / inverse_eta)
    closed = jnp.exp(mixture.log_density(tilted, points))
    normalized = jnp.exp(mixture.grid_log_density(mixture.log_density(mix, points) + points @ c * inverse_eta, area))
    rows.append({"inverse_eta": inverse_eta, "mean": np.asarray(mixture.mean(tilted)).tolist(),
                 "weights": np.exp(np.asarray(tilted.log_weights)).tolist(),
                 "max_abs_difference_over_max_density": float(jnp.max(jnp.abs(closed - normalized)) / jnp.max(closed)),
                 "l1_difference": float(jnp.sum(jnp.abs(closed - normalized)) * area),
                 "closed_form_mass_on_grid": float(jnp.sum(closed) * area),
                 "kl_to_pi0": float(mixture.kl_to_base(mix, c, 1 / inverse_eta))})
    panels.append((f"({'bcd'[len(panels) - 1]}) preferred π_r, 1/η = {inverse_eta:g}", jnp.log(closed)))
  results = {"grid": grid, "mixture_weights": np.exp(np.asarray(mix.log_weights)).tolist(),
             "mixture_means": np.asarray(mix.means).tolist(), "panels": rows}
  return results, {"panels": panels, "xs": xs, "ys": ys}


def claims(results):
  rows = results["panels"]
  worst = max(r["max_abs_difference_over_max_density"] for r in rows)
  return [sanity_check("Figure 1: a Gaussian mixture tilted by a linear reward is the mixture with means μ_k + S_k c/η "
                       "and reweighted components",
                       f"closed form vs grid normalization: max |Δ density| / max density {worst:.1e} over 1/η ∈ "
                       f"{{{', '.join(f'{v:g}' for v in INVERSE_ETAS)}}}; grid holds mass "
                       f"{min(r['closed_form_mass_on_grid'] for r in rows):.6f}", "agree" if worst < 1e-6 else "DISAGREE",
                       "completing the square in each Gaussian component"),
          sanity_check("Figure 1: as η → 0, π_r leaves π0's structure for the reward",
                       "; ".join(f"1/η={r['inverse_eta']:g}: mean x {r['mean'][0]:.2f}, top component weight "
                                 f"{max(r['weights']):.2f}, KL(π_r‖π0) {r['kl_to_pi0']:.2f}" for r in rows),
                       "π_r concentrates on the rightmost mode and its KL grows"
                       if rows[-1]["kl_to_pi0"] > rows[0]["kl_to_pi0"] else "not observed",
                       "KL(π_r‖π0) increases with 1/η for any non-constant reward")]


def figures(results, arrays):
  plt = pyplot()
  panels, xs, ys = arrays["panels"], arrays["xs"], arrays["ys"]
  fig, axes = plt.subplots(1, 4, figsize=(16, 3.6), sharey=True)
  for ax, (title, log_density) in zip(axes, panels):
    ax.contourf(xs, ys, np.exp(np.asarray(log_density)), levels=30, cmap="viridis")
    ax.set_title(title)
    ax.set_xlabel("a₁")
    ax.set_aspect("equal")
  axes[0].set_ylabel("a₂")
  fig.suptitle("Figure 1: π_r ∝ π0 exp(r/η), r(a) = [1, 0]ᵀa (closed form)")
  return {"figure1.png": fig}
