"""The project's promises: the README's commands are what CI runs, and the main job's CLI works."""

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
