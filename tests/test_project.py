"""The project's promises: the README's commands are what CI runs, and the main job's CLI works."""

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from bandit_sim import experiment

ROOT = pathlib.Path(__file__).resolve().parents[1]
TEST_COMMAND = 'python3 -m venv .venv && . .venv/bin/activate && pip install -e ".[test]" && python -m pytest'
MAIN_COMMAND = 'python3 -m venv .venv && . .venv/bin/activate && pip install -e . && python -m llm && python -m bandit_sim.experiment'


def test_readme_commands_are_the_ones_ci_runs():
  readme = (ROOT / "README.md").read_text()
  ci = (ROOT / ".ci" / "run").read_text()
  assert TEST_COMMAND in readme and MAIN_COMMAND in readme
  assert TEST_COMMAND in ci.splitlines()
  assert "set -euo pipefail" in ci


def test_experiment_cli_runs_one_experiment(tmp_path):
  """One experiment alone: its folder, no aggregate summary (every experiment runs in the test below)."""
  for name, pngs, rows in (("gibbs", ["figure1.png"], 2),):
    results = experiment.main([name, "--quick", "--seeds", "4", "--out", str(tmp_path), "--quiet"])
    assert sorted(os.listdir(tmp_path / name)) == pngs + ["summary.json", "summary.md"]
    saved = json.loads((tmp_path / name / "summary.json").read_text())
    assert saved["settings"]["seeds"] == 4 and set(saved[name]) == set(results[name])
    assert (tmp_path / name / "summary.md").read_text().count(f"\n| {name} |") == rows
    assert_claim_kinds(saved["claims"])
  assert not (tmp_path / "summary.md").exists()  # written only when several experiments run


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


def test_experiment_cli_writes_complete_results(tmp_path):
  """Every experiment at --quick settings on 2 seeds (compile-bound: about 3 minutes on 2 cores): the
  files, the rows of each summary, every sanity check held, and the numbers that have a closed form."""
  results = experiment.main(["--quick", "--seeds", "2", "--out", str(tmp_path), "--quiet"])
  figures = {"core": ["core.png"], "coverage": ["coverage.png"], "gibbs": ["figure1.png"], "hybrid": ["hybrid.png"],
             "offline": ["offline.png"], "online": ["online.png"], "regret": ["regret.png"],
             "rejection": ["best_of_n.png", "rejection.png"], "nash": ["nash.png"]}
  assert sorted(os.listdir(tmp_path)) == sorted(figures) + ["summary.md"]
  for name, pngs in figures.items():  # no temp files left behind
    assert sorted(os.listdir(tmp_path / name)) == pngs + ["summary.json", "summary.md"]
  saved = json.loads((tmp_path / "core" / "summary.json").read_text())
  assert saved["core"]["mle"]["sizes"] == results["core"]["mle"]["sizes"]
  assert np.all(np.isfinite(saved["core"]["mle"]["mean_l2_error"]))
  rejection = json.loads((tmp_path / "rejection" / "summary.json").read_text())["rejection"]
  assert rejection["best_of_n"]["bound_holds"]
  assert set(rejection["pseudo_labelling"]["selected"]["methods"]) == {"pi0", "sft", "dpo", "rso", "rso_hinge", "rso_exact", "multistep",
                                                                "multistep_3", "plug_in"}
  assert json.loads((tmp_path / "coverage" / "summary.json").read_text())["coverage"]["max_loss_gap"] < 1e-8
  gibbs = json.loads((tmp_path / "gibbs" / "summary.json").read_text())["gibbs"]
  assert max(p["max_abs_difference_over_max_density"] for p in gibbs["panels"]) < 1e-6
  for name in figures:
    claims = json.loads((tmp_path / name / "summary.json").read_text())["claims"]
    assert_claim_kinds(claims)
    for row in claims:
      assert row["kind"] != "sanity check" or row["verdict"].startswith(SANITY_HELD), row
  offline = json.loads((tmp_path / "offline" / "summary.json").read_text())["offline"]
  assert set(offline["coverage"]) == {"pi0", "covers_pi_star", "misses_pi_star"}
  assert len(offline["theorem_3_1"]["pi0"]["per_seed"]["lhs_two"]) == 2
  assert max(rows["max_tv_pdpo_matched_to_II"] for rows in offline["coverage"].values()) < 1e-3  # Prop. 5.1
  online = json.loads((tmp_path / "online" / "summary.json").read_text())["online"]
  assert set(online["equal_budget"]) >= {"uncertainty", "reference", "random_pairs", "offline_pi0"}
  assert len(json.loads((tmp_path / "regret" / "summary.json").read_text())["regret"]["uncertainty"]["Reg"]["mean"]) == 3
  nash = json.loads((tmp_path / "nash" / "summary.json").read_text())["nash"]
  assert set(nash["online"]["uncertainty_minus"]) == {"reference", "random_pairs", "offline"}
  assert len(nash["offline"]["pi0"]["gap"]) == len(nash["offline"]["betas"]) + 1
  assert nash["online"]["min_enhancer_slack"] >= -1e-9
  table = (tmp_path / "summary.md").read_text()
  assert table.count("\n| gibbs |") == 2 and table.count("\n| coverage |") == 6
  assert table.count("\n| rejection |") == 15 and table.count("\n| nash |") == 13
  assert table.count("\n| core |") == 3 and table.count("\n| offline |") >= 15
  assert table.count("\n| online |") == 11 and table.count("\n| hybrid |") == 8 and table.count("\n| regret |") == 4


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
