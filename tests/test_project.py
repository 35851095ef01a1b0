"""The project's promises: the README's commands are what CI runs, and the main job's CLI works."""

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from bandit_sim import experiment
from bandit_sim.experiments import EXPERIMENTS

ROOT = pathlib.Path(__file__).resolve().parents[1]
TEST_COMMAND = 'python3 -m venv .venv && . .venv/bin/activate && pip install -e ".[test]" && python -m pytest'
MAIN_COMMAND = 'python3 -m venv .venv && . .venv/bin/activate && pip install -e . && python -m llm && python -m bandit_sim.experiment'


def test_readme_commands_are_the_ones_ci_runs():
  readme = (ROOT / "README.md").read_text()
  ci = (ROOT / ".ci" / "run").read_text()
  assert TEST_COMMAND in readme and MAIN_COMMAND in readme
  assert TEST_COMMAND in ci.splitlines()
  assert "set -euo pipefail" in ci


def assert_claim_kinds(claims):
  """Every summary row says what it is: a sanity check says why it holds by construction, a finding what
  would have falsified it, and a measurement has no verdict of its own."""
  prefix = {"sanity check": "true by construction (", "finding": "falsified if ", "measurement": ""}
  for row in claims:
    assert row["kind"] in prefix and row["note"].startswith(prefix[row["kind"]]) and row["note"], row
    assert (row["verdict"] == "measured") == (row["kind"] == "measurement"), row


# The verdicts of the sanity checks when they hold (any other verdict is a failure, i.e. a bug).
SANITY_HELD = ("holds", "certified", "agree", "unique optimum", "extragradient converges", "matches exp(−10)",
               "Gibbs gains at least as much", "π_r concentrates on the rightmost mode")
# Each experiment's rows, figures and the numbers that have a closed form or an exact value.
EXPERIMENT_CHECKS = {
    "core": (3, ["core.png"], lambda r: np.all(np.isfinite(r["mle"]["mean_l2_error"]))),
    "coverage": (6, ["coverage.png"], lambda r: r["max_loss_gap"] < 1e-8),  # Lemma E.1's closed-form minimum
    "gibbs": (2, ["figure1.png"], lambda r: max(p["max_abs_difference_over_max_density"] for p in r["panels"]) < 1e-6),
    "hybrid": (8, ["hybrid.png"], lambda r: True),
    "regret": (4, ["regret.png"], lambda r: len(r["uncertainty"]["Reg"]["mean"]) == 3),
    "offline": (None, ["offline.png"], lambda r: set(r["coverage"]) == {"pi0", "covers_pi_star", "misses_pi_star"}
                and len(r["theorem_3_1"]["pi0"]["per_seed"]["lhs_two"]) == 2  # Proposition 5.1 in its class:
                and max(rows["max_tv_pdpo_matched_to_II"] for rows in r["coverage"].values()) < 1e-3),
    "online": (11, ["online.png"], lambda r: set(r["equal_budget"]) >= {"uncertainty", "reference", "random_pairs",
                                                                         "offline_pi0"}),
    "rejection": (15, ["best_of_n.png", "rejection.png"], lambda r: r["best_of_n"]["bound_holds"] and set(
        r["pseudo_labelling"]["selected"]["methods"]) == {"pi0", "sft", "dpo", "rso", "rso_hinge", "rso_exact",
                                                          "multistep", "multistep_3", "plug_in"}),
    "nash": (13, ["nash.png"], lambda r: set(r["online"]["uncertainty_minus"]) == {"reference", "random_pairs", "offline"}
             and len(r["offline"]["pi0"]["gap"]) == len(r["offline"]["betas"]) + 1
             and r["online"]["min_enhancer_slack"] >= -1e-9),
}
# The default run has the experiments that compile in about 55 s together on 2 cores; the other five (about
# 220 s more) run with -m slow.
DEFAULT_EXPERIMENTS = ("core", "coverage", "gibbs", "regret")


@pytest.mark.parametrize("name", [pytest.param(n, marks=[] if n in DEFAULT_EXPERIMENTS else [pytest.mark.slow])
                                  for n in EXPERIMENT_CHECKS])
def test_each_experiment_at_quick_size(name, tmp_path):
  """One experiment alone at --quick on 2 seeds: its files (no aggregate summary), its rows (each a sanity
  check that held, a finding with its falsifier, or a measurement) and the numbers with exact values."""
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
  """Every experiment in one run (about 5 minutes on 2 cores): DIR/summary.md holds every experiment's rows."""
  experiment.main(["--quick", "--seeds", "2", "--out", str(tmp_path), "--quiet"])
  assert sorted(os.listdir(tmp_path)) == sorted(EXPERIMENT_CHECKS) + ["summary.md"]
  table = (tmp_path / "summary.md").read_text()
  for name, (rows, _, _) in EXPERIMENT_CHECKS.items():
    count = table.count(f"\n| {name} |")
    assert count == rows if rows else count >= 15, name


def test_experiment_cli_rejects_bad_arguments(tmp_path, capsys):
  (tmp_path / "a_file").write_text("x")
  for args, message in ((["--seeds", "1"], "--seeds must be an integer >= 2"), (["nonexistent"], "invalid choice"),
                        (["--seed", str(2 ** 64)], "--seed must be an integer in [0, 2**63)"),
                        (["--out", str(tmp_path / "a_file" / "out")], "a_file is not a folder"),
                        (["--seeds", str(10 ** 11)], "--seeds 100000000000: the per-seed arrays alone need about")):
    with pytest.raises(SystemExit) as exit_:
      experiment.main(args)
    assert exit_.value.code == 2
    assert message in capsys.readouterr().err.splitlines()[-1]  # one line, before any computation


def test_a_single_experiment_rerun_replaces_its_rows_in_the_aggregate_summary(tmp_path):
  (tmp_path / "summary.md").write_text(
      "# bandit_sim results\n\nSettings: `{}`\n\n| experiment | kind | claim | measured | verdict | note |\n"
      "| --- | --- | --- | --- | --- | --- |\n| core | finding | old core row | 1 | holds | n |\n"
      "| gibbs | finding | stale row | 0 | DISAGREE | n |\n| gibbs | finding | stale row 2 | 0 | x | n |\n"
      "| coverage | finding | old coverage row | 2 | holds | n |\n")
  experiment.main(["gibbs", "--quick", "--seeds", "2", "--out", str(tmp_path), "--quiet"])
  text = (tmp_path / "summary.md").read_text()
  assert "stale row" not in text and text.count("\n| gibbs |") == 2  # the rerun's two rows
  assert text.index("| core |") < text.index("| gibbs |") < text.index("| coverage |")  # in place
  assert "old core row" in text and "old coverage row" in text
  assert "Rows of `gibbs` from a rerun with settings" in text


def test_result_files_and_folders_get_the_users_umask(tmp_path):
  from gshf_jax import atomic
  old = os.umask(0o022)
  try:
    atomic.write_text(str(tmp_path / "a.txt"), "x")
    atomic.write_folder(str(tmp_path / "model"), lambda folder: atomic.write_text(os.path.join(folder, "w"), "y"))
  finally:
    os.umask(old)
  assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o644
  assert (tmp_path / "model").stat().st_mode & 0o777 == 0o755
  assert sorted(os.listdir(tmp_path)) == ["a.txt", "model"]  # no temporary files left


def test_readme_python_quick_starts_run():
  """The README's Python quick starts (those that need no checkpoint on disk) run as written."""
  readme = (ROOT / "README.md").read_text()
  blocks = [b.split("```", 1)[0] for b in readme.split("```python\n")[1:]]
  runnable = [b for b in blocks if "path/to" not in b]
  assert len(runnable) == 2
  for block in runnable:
    proc = subprocess.run([sys.executable, "-c", block], capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_seeds_whose_results_cannot_fit_in_memory_are_refused_before_computing():
  import jax
  import numpy as np

  from bandit_sim.experiments import _common
  calls = []
  batched = lambda keys: calls.append(1) or jax.numpy.zeros((keys.shape[0], 10 ** 6))  # 8 MB per seed
  with pytest.raises(MemoryError, match=r"--seeds 100000: the per-seed arrays alone need about 1490.1 GiB"):
    _common.map_seeds(batched, jax.random.split(jax.random.key(0), 100_000))
  assert calls == [1]  # traced once for the shapes (eval_shape), never run
  _common.results_fit(jax.ShapeDtypeStruct((1, 2), np.uint32), 1000)  # small: no error


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
  from gshf_jax import atomic
  path = tmp_path / "summary.json"
  atomic.write_text(str(path), "old")

  def full(fd):
    raise OSError(28, "No space left on device")
  monkeypatch.setattr(os, "fsync", full)
  with pytest.raises(OSError, match="No space left"):
    atomic.write_text(str(path), "new")
  assert path.read_text() == "old" and os.listdir(tmp_path) == ["summary.json"]


def test_a_read_only_folder_is_named_before_any_work(tmp_path, monkeypatch):
  """What `--out` / `output_dir` checks see in a read-only folder (the suite may run as root, for whom every
  folder is writable, so os.access is what is made to say no)."""
  from gshf_jax import atomic
  monkeypatch.setattr(os, "access", lambda path, mode: False)
  assert atomic.unwritable(str(tmp_path / "new" / "out"), folder=True) == f"{tmp_path} is not writable"
  assert atomic.unwritable(str(tmp_path / "x.jsonl")) == f"{tmp_path} is not writable"
