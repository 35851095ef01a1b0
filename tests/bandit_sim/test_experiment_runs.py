"""Every experiment of `python -m bandit_sim.experiment` at --quick on 2 seeds, in the default run: its files,
its summary rows (each a sanity check that held, a finding with its falsifier, or a measurement), and the
numbers that obey a law or have a closed form, recomputed here."""

import json
import math
import os

import numpy as np
import pytest

from bandit_sim import experiment
from bandit_sim.experiments import EXPERIMENTS


def assert_claim_kinds(claims):
  """Every summary row says what it is: a sanity check says why it holds by construction, a finding what
  would have falsified it, and a measurement has no verdict of its own."""
  prefix = {"sanity check": "true by construction (", "finding": "falsified if ", "measurement": ""}
  for row in claims:
    assert row["kind"] in prefix and row["note"].startswith(prefix[row["kind"]]) and row["note"], row
    assert (row["verdict"] == "measured") == (row["kind"] == "measurement"), row


def means(rows):
  """The means of a {name: (mean, stderr)} table."""
  return np.array([v[0] for v in rows.values()])


def hybrid_holds(r):
  """J(pi*) - J(pi) >= 0 for every output; more data can only shrink ||z||_{Sigma^-1} (Sigma grows); Proposition
  D.1's alpha-dagger and Theorem D.2's potential term in closed form."""
  norm = {k: v[0] for k, v in r["coverage"]["norm_z"].items()}
  d2, d = r["theorem_d_2"], r["env"]["dim"]
  T = d2["iterations"]
  return (np.all(means(r["suboptimality"]) >= 0) and norm["hybrid"] <= norm["off"]
          and norm["offline_budget"] <= norm["off"] and min(r["reward_kl"]["kl"]) >= 0
          and math.isclose(r["coverage"]["alpha_dagger"],
                           math.log(r["n_off"]) / math.log(r["iterations"] * r["batch_size"]))
          and math.isclose(d2["potential_term"], d2["beta"] * math.sqrt(6 * T * d * math.log(1 + T / (d * d2["lam"])))))


def online_holds(r):
  """Every method's best iterate is at most its selected and its last one, all >= 0; the reference enhancer
  (pi2 = pi0) never moves; Eq. (8)'s slack of the Option II enhancer is >= 0."""
  rows = r["equal_budget"]
  iterative = {k: v for k, v in rows.items() if "best_iterate" in v}
  return (set(rows) >= {"uncertainty", "reference", "random_pairs", "offline_pi0", "offline_same_behaviour"}
          and all(0 <= v["best_iterate"][0] <= min(v["selected"][0], v["last"][0]) + 1e-12 for v in iterative.values())
          and np.ptp(rows["reference"]["enhancer_by_t"]) < 1e-12 and r["enhancer_slack"]["min"] >= -1e-9)


def rejection_holds(r):
  """Best-of-n's KL bound log n - (n-1)/n in closed form and below it; best-of-1 is pi0 (no KL, no gain)."""
  rows = r["best_of_n"]["rows"]
  return (r["best_of_n"]["bound_holds"] and all(math.isclose(row["bound"], math.log(row["n"]) - (row["n"] - 1) / row["n"],
                                                             abs_tol=1e-12) for row in rows)
          and rows[0]["n"] == 1 and abs(rows[0]["mean_kl"]) < 1e-9 and abs(rows[0]["mean_gain"]) < 1e-9
          and set(r["pseudo_labelling"]["selected"]["methods"]) == {"pi0", "sft", "dpo", "rso", "rso_hinge", "rso_exact",
                                                                    "multistep", "multistep_3", "plug_in"})


def nash_holds(r):
  """Duality gaps are >= 0 for every coverage and pessimism level; the enhancer's constraint holds."""
  gaps = [g[0] for cov in r["offline"].values() if isinstance(cov, dict) for g in cov["gap"]]
  return (set(r["online"]["uncertainty_minus"]) == {"reference", "random_pairs", "offline"}
          and len(r["offline"]["pi0"]["gap"]) == len(r["offline"]["betas"]) + 1
          and min(gaps) >= 0 and r["online"]["min_enhancer_slack"] >= -1e-9)


# The verdicts of the sanity checks when they hold (any other verdict is a failure, i.e. a bug).
SANITY_HELD = ("holds", "certified", "agree", "unique optimum", "extragradient converges", "matches exp(−10)",
               "Gibbs gains at least as much", "π_r concentrates on the rightmost mode")
# Each experiment's rows, figures and the numbers that have a closed form or an exact value.
EXPERIMENT_CHECKS = {
    "core": (3, ["core.png"], lambda r: np.all(np.isfinite(r["mle"]["mean_l2_error"]))),
    "coverage": (6, ["coverage.png"], lambda r: r["max_loss_gap"] < 1e-8),  # Lemma E.1's closed-form minimum
    "gibbs": (2, ["figure1.png"], lambda r: max(p["max_abs_difference_over_max_density"] for p in r["panels"]) < 1e-6),
    "hybrid": (8, ["hybrid.png"], hybrid_holds),
    "regret": (4, ["regret.png"], lambda r: len(r["uncertainty"]["Reg"]["mean"]) == 3),
    "offline": (None, ["offline.png"], lambda r: set(r["coverage"]) == {"pi0", "covers_pi_star", "misses_pi_star"}
                and len(r["theorem_3_1"]["pi0"]["per_seed"]["lhs_two"]) == 2  # Proposition 5.1 in its class:
                and max(rows["max_tv_pdpo_matched_to_II"] for rows in r["coverage"].values()) < 1e-3),
    "online": (11, ["online.png"], online_holds),
    "rejection": (15, ["best_of_n.png", "rejection.png"], rejection_holds),
    "nash": (13, ["nash.png"], nash_holds),
}


@pytest.mark.parametrize("name", list(EXPERIMENT_CHECKS))
def test_each_experiment_at_quick_size(name, tmp_path):
  """One experiment alone at --quick on 2 seeds: its files (no aggregate summary), its rows and its laws."""
  rows, pngs, check = EXPERIMENT_CHECKS[name]
  results = experiment.main([name, "--quick", "--seeds", "2", "--out", str(tmp_path), "--quiet"])
  assert sorted(os.listdir(tmp_path)) == [name]  # DIR/summary.md only when several experiments run
  assert sorted(os.listdir(tmp_path / name)) == pngs + ["summary.json", "summary.md"]  # no temporary files
  saved = json.loads((tmp_path / name / "summary.json").read_text())
  assert saved["settings"]["seeds"] == 2 and set(saved[name]) == set(results[name])
  count = (tmp_path / name / "summary.md").read_text().count(f"\n| {name} |")
  assert count == rows if rows else count >= 15
  assert_claim_kinds(saved["claims"])
  for row in saved["claims"]:
    assert row["kind"] != "sanity check" or row["verdict"].startswith(SANITY_HELD), row
  assert check(saved[name])


def test_every_experiment_has_its_checks():
  assert set(EXPERIMENT_CHECKS) == set(EXPERIMENTS)


@pytest.mark.slow
def test_experiment_cli_runs_every_experiment_into_one_summary(tmp_path):
  """Every experiment in one run (about 3 minutes on 2 cores): DIR/summary.md holds every experiment's rows."""
  experiment.main(["--quick", "--seeds", "2", "--out", str(tmp_path), "--quiet"])
  assert sorted(os.listdir(tmp_path)) == sorted(EXPERIMENT_CHECKS) + ["summary.md"]
  table = (tmp_path / "summary.md").read_text()
  for name, (rows, _, _) in EXPERIMENT_CHECKS.items():
    count = table.count(f"\n| {name} |")
    assert count == rows if rows else count >= 15, name
