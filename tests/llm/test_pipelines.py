"""The paper's pipelines and the built-in task: `python -m llm --quick` end to end (every method of Table 1,
best-of-n, the table and plots), RSO pairs against the proxy reward, equal oracle budgets, online GSHF
with the other enhancers, and resume after an interruption between stages and inside a stage."""

import dataclasses
import json
import os
import shutil

import numpy as np
import pytest
from safetensors.numpy import load_file

from llm import cli
from llm.builtin import run as builtin
from llm.builtin import task as review_task
from llm.preference import oracle, pipelines, stages
from llm.training import config as C
from llm.training import data, manifest, trainers
from llm.training.config import with_overrides

QUICK = ["--quick", "--seeds", "1"]  # one replicate: the replicate loop and the statistics over replicates
# are checked in test_frontier.py and test_replicates_differ_in_data_and_seed_only


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
  """The quick run's folder and replicate 1's config (its D_off, folders and seed)."""
  out = str(tmp_path_factory.mktemp("builtin"))
  assert cli.main([*QUICK, "--out", out]) == 0
  sizes = dataclasses.replace(builtin.SIZES["quick"], seeds=1)
  paths = builtin.build_task(out, sizes, 0)
  return out, builtin.replicate_config(builtin.base_config(out, sizes, paths, 0), 0)


def test_gold_reward_is_scaled_vader():
  from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer
  texts = [" the food was really great!", " the staff was not friendly but the view was lovely.", " it is old."]
  expected = [4 * SentimentIntensityAnalyzer().polarity_scores(t)["compound"] for t in texts]
  assert review_task.gold_reward(["x"] * 3, texts) == pytest.approx(expected)
  assert expected[0] > 0 and expected[2] == 0


def test_quick_run_writes_the_table_for_every_method(quick):
  out, config = quick
  summary = json.load(open(os.path.join(out, "summary.json")))
  assert list(summary["methods"]) == ["pi0", "SFT", "DPO", "Pessimistic DPO", "RSO", "Multi-step RSO",
                                      "Hybrid GSHF-DPO"]
  for name, result in summary["methods"].items():
    assert {"reward", "kl", "ood_reward", "id_minus_ood", "length", "temperatures"} <= set(result)
    assert ("win_rate" in result) == (name != "DPO")
  assert summary["methods"]["pi0"]["kl"] == pytest.approx(0.0, abs=1e-5)  # KL of pi0 to itself
  assert list(summary["hybrid_iterations"]) == ["iteration 1", "iteration 2", "iteration 3"]
  d_off = data.read_rows(config.data.train)
  assert summary["oracle_queries"]["offline"] == len(d_off) >= 32  # D_off: finished, distinct pairs only
  hybrid = [len(data.read_rows(os.path.join(config.output_dir, "hybrid", f"iteration_{t}", "pairs.jsonl"))) for t in (1, 2, 3)]
  assert summary["oracle_queries"]["hybrid"] == sum(hybrid) <= len(d_off)
  samples = [(r["prompt"], set(stages.responses(r))) for r in data.read_rows(os.path.join(config.output_dir, "d_off_samples.jsonl"))]
  for pair in d_off:  # every pair holds two finished responses of pi0 to its prompt
    assert any(x == pair["prompt"] and {(pair["chosen"], True), (pair["rejected"], True)} <= s for x, s in samples)
  # Bradley-Terry labels: the chosen response has the higher gold reward at the rate sigma(|gap|) predicts
  prompts = [p["prompt"] for p in d_off]
  gap = review_task.gold_reward(prompts, [p["chosen"] for p in d_off]) - np.asarray(
      review_task.gold_reward(prompts, [p["rejected"] for p in d_off]))
  decided = gap != 0
  expected = 1 / (1 + np.exp(-np.abs(gap[decided])))
  agree = np.mean(gap[decided] > 0)
  assert expected.mean() > 0.7 and abs(agree - expected.mean()) < 3 * np.sqrt(expected.mean() * (1 - expected.mean())
                                                                                / decided.sum())
  table = open(os.path.join(out, "summary.md")).read()
  for name in summary["methods"]:
    assert f"| {name} |" in table
  for plot in ("frontier.png", "temperature.png"):
    assert os.path.getsize(os.path.join(out, plot)) > 1000
  # pi0 learned the grammar: most of its responses end with the stop token within the budget
  assert summary["methods"]["pi0"]["length"] < builtin.SIZES["quick"].max_new_tokens


def test_frontier_paths_selection_sweep_and_pessimistic_dpo(quick):
  out, config = quick
  summary = json.load(open(os.path.join(out, "summary.json")))
  f = summary["frontier"]
  assert list(f["methods"]) == list(builtin.METHODS) and f["replicates"] == 1 and f["pi0"]["kl"] == 0
  run = config.output_dir
  for name, folder in (("DPO", "dpo"), ("Pessimistic DPO", "pdpo"), ("Hybrid GSHF-DPO", "hybrid/iteration_3/dpo")):
    (path,) = f["methods"][name]["paths"]  # pi0, then the run's snapshots in step order
    assert [p.get("folder") for p in path] == [None] + [d for _, d in trainers.snapshots(os.path.join(run, folder))]
    assert path[0]["kl"] == 0 and len(path) == 1 + builtin.SIZES["quick"].snapshots
  (multistep,) = f["methods"]["Multi-step RSO"]["paths"]  # one path through the three steps' snapshots
  steps = [d for i in (1, 2, 3) for _, d in trainers.snapshots(os.path.join(run, "multistep_rso", f"step_{i}", "dpo"))]
  assert [p["folder"] for p in multistep[1:]] == steps
  # selection: per method, the snapshot (any step, any beta) of the highest validation reward
  for name, row in f["methods"].items():
    (chosen,) = row["selected"]["folders"]
    candidates = [p for p in row["paths"][0][1:]] + [p for path in row["sweep"].values() for p in path[1:]]
    assert chosen in [p["folder"] for p in candidates]
    assert max(p["validation_reward"] for p in candidates) == next(p["validation_reward"] for p in candidates
                                                                  if p["folder"] == chosen)
  assert set(f["methods"]["SFT"]["sweep"]) == set() and set(f["methods"]["DPO"]["sweep"]) == {"0.3"}
  # the sweep retrains each method's last stage at beta = 0.3 on the same data
  sweep = os.path.join(run, "sweep_beta_0.3")
  settings = {name: json.load(open(os.path.join(sweep, name, "summary.json")))["config"]
              for name in ("dpo", "pdpo", "rso", "multistep_rso", "hybrid")}
  assert all(c["dpo"]["beta"] == 0.3 for c in settings.values())
  assert settings["rso"]["data"]["train"] == os.path.join(run, "rso", "pairs.jsonl")
  assert settings["multistep_rso"]["model"]["path"] == os.path.join(run, "multistep_rso", "step_2", "dpo", "model")
  assert settings["hybrid"]["data"]["train"] == os.path.join(run, "hybrid", "iteration_3", "all_pairs.jsonl")
  # pessimistic DPO: Eq. (10) with the ensemble's disagreement, a different policy from DPO's
  pdpo = json.load(open(os.path.join(run, "pdpo", "summary.json")))["config"]["dpo"]
  assert pdpo["uncertainty_coef"] == builtin.PESSIMISM and pdpo["reward_ensemble"] == os.path.join(run, "reward_ensemble")
  gamma = np.load(os.path.join(run, "pdpo", "uncertainty_train.npz"))
  assert np.std(gamma["gamma_chosen"]) > 0
  a, b = (load_file(os.path.join(run, d, "model", "model.safetensors")) for d in ("dpo", "pdpo"))
  assert any(not np.allclose(a[k], b[k]) for k in a)
  # matched KL: every method but DPO, three levels up to the smaller reach, one claim row each
  assert set(f["matched_kl"]) == set(builtin.METHODS) - {"DPO"}
  for name, rows in f["matched_kl"].items():
    top = min(max(p["kl"] for p in f["methods"][name]["paths"][0]), max(p["kl"] for p in f["methods"]["DPO"]["paths"][0]))
    assert [r["kl"] for r in rows] == pytest.approx([top / 3, 2 * top / 3, top])
  kinds = [c["kind"] for c in summary["claims"]]
  assert kinds.count("sanity check") == 1 and kinds.count("finding") == 2 * len(builtin.METHODS) - 1
  table = open(os.path.join(out, "summary.md")).read()
  assert "## Claims" in table and "## Reward-KL frontier (Figure 2)" in table


def test_replicates_differ_in_data_and_seed_only(tmp_path):
  sizes = builtin.SIZES["quick"]
  base = builtin.base_config(str(tmp_path), sizes, {k: str(tmp_path / k) for k in (
      "sft", "train_prompts", "test_prompts", "ood_prompts", "validation_prompts", "init")}, 5)
  first, second = builtin.replicate_config(base, 0), builtin.replicate_config(base, 1)
  assert (first.train.seed, second.train.seed) == (5, 6)
  assert first.output_dir != second.output_dir and first.data.train != second.data.train
  assert first.data.train.startswith(first.output_dir + os.sep)
  assert first.model == second.model == base.model and first.evaluate == second.evaluate  # pi0 and prompts shared


def test_rso_pairs_prefer_the_proxy_reward_and_budgets_match(quick):
  out, config = quick
  pairs = data.read_rows(os.path.join(config.output_dir, "rso", "pairs.jsonl"))
  candidates = data.read_rows(os.path.join(config.output_dir, "rso", "pairs.jsonl.candidates.jsonl"))
  prompts = pipelines.training_prompts(config)
  assert [c["prompt"] for c in candidates] == prompts and all(len(r["responses"]) == 4 for r in candidates)
  finished = {}  # prompts repeat: the finished candidates of every row of a prompt
  for c in candidates:
    finished.setdefault(c["prompt"], set()).update(y for y, done in stages.responses(c) if done)
  assert len(prompts) * 0.5 < len(pairs) <= len(prompts)  # accepted = 2: one pair per prompt with 2 finished
  assert all({p["chosen"], p["rejected"]} <= finished[p["prompt"]] for p in pairs)
  proxy = oracle.reward_model_oracle(config.pipeline.proxy_reward)
  prompts = [p["prompt"] for p in pairs]
  chosen = proxy.rewards(prompts, [p["chosen"] for p in pairs])
  rejected = proxy.rewards(prompts, [p["rejected"] for p in pairs])
  assert np.all(chosen >= rejected - 1e-4)
  steps = [data.read_rows(os.path.join(config.output_dir, "multistep_rso", f"step_{i}", "pairs.jsonl")) for i in (1, 2, 3)]
  thirds = [list(x) for x in np.array_split(prompts, 3)]
  assert all({p["prompt"] for p in step} <= set(third) for step, third in zip(steps, thirds))  # a third per step
  betas = [json.load(open(os.path.join(config.output_dir, "multistep_rso", f"step_{i}", "dpo", "summary.json")))["config"]["dpo"]["beta"]
           for i in (1, 2, 3)]
  assert betas == [0.5, 0.3, 0.1]
  proposers = [config.model.path] + [os.path.join(config.output_dir, "multistep_rso", f"step_{i}", "dpo", "model") for i in (1, 2)]
  for i, proposer in enumerate(proposers, 1):  # step i samples its candidates from step i - 1's policy
    record = json.load(open(os.path.join(config.output_dir, "multistep_rso", f"step_{i}", "pairs.jsonl.candidates.jsonl.manifest.json")))
    assert record["inputs"]["policy"] == manifest.path_fingerprint(proposer)
  sizes = [len(data.read_rows(os.path.join(config.output_dir, "hybrid", f"iteration_{t}", "all_pairs.jsonl"))) for t in (1, 2, 3)]
  new = [len(data.read_rows(os.path.join(config.output_dir, "hybrid", f"iteration_{t}", "pairs.jsonl"))) for t in (1, 2, 3)]
  assert sizes == list(np.cumsum(new)) and new[0] == len(data.read_rows(config.data.train)) // 3  # all data so far


def test_online_gshf_with_the_best_of_n_enhancer(quick, tmp_path):
  out, config = quick
  config = with_overrides(config, {"output_dir": str(tmp_path), "pipeline.enhancer": "best_of_n", "pipeline.proxy_reward": "",
                                   "pipeline.iterations": 2, "pipeline.queries_per_iteration": 24,
                                   "train.epochs": 1, "train.batch_size": 8})
  result = pipelines.run_online(config)
  first = data.read_rows(tmp_path / "online" / "iteration_1" / "samples.jsonl")
  assert len(first) == 24 and all(len(r["responses"]) == 2 for r in first)
  labelled = [len(data.read_rows(tmp_path / "online" / f"iteration_{t}" / "pairs.jsonl")) for t in (1, 2)]
  assert result["queries"] == sum(labelled) == 48 - sum(result["dropped"].values()) and result["budget"] == 48
  assert len(result["iterations"]) == 2
  # the enhancer's proxy reward model learned from iteration 1's labels only, which the budget counts
  proxy = json.load(open(tmp_path / "online" / "enhancer_proxy" / "summary.json"))
  assert proxy["config"]["data"]["train"] == str(tmp_path / "online" / "iteration_1" / "pairs.jsonl")
  assert result["proxy_labels"] == "iteration 1's pairs"
  enhanced = data.read_rows(tmp_path / "online" / "iteration_2" / "enhancer_samples.jsonl")
  assert len(enhanced) == 24
  assert len(data.read_rows(tmp_path / "online" / "iteration_2" / "all_pairs.jsonl")) == sum(labelled)


def test_a_rerun_resumes_inside_a_stage_and_skips_finished_ones(quick, monkeypatch):
  out, config = quick
  stage = os.path.join(config.output_dir, "hybrid", "iteration_3", "dpo")
  before = load_file(os.path.join(stage, "model", "model.safetensors"))
  summary_before = json.load(open(os.path.join(out, "summary.json")))
  # interrupted inside the last training stage: its outputs and its last checkpoint are gone
  shutil.rmtree(os.path.join(stage, "model"))
  os.remove(os.path.join(stage, "summary.json"))
  checkpoints = os.path.join(stage, "checkpoints")
  steps = sorted(int(d) for d in os.listdir(checkpoints) if d.isdigit())
  assert len(steps) >= 2
  shutil.rmtree(os.path.join(checkpoints, str(steps[-1])))
  os.remove(os.path.join(out, "evaluation", "Hybrid_GSHF-DPO.json"))
  os.remove(os.path.join(out, "summary.json"))
  calls = []
  real = trainers.train
  monkeypatch.setattr(trainers, "train", lambda *a, **k: calls.append(a[4]) or real(*a, **k))
  assert cli.main([*QUICK, "--out", out]) == 0
  assert calls == [stage]  # only the interrupted stage trained again, from its checkpoint
  after = load_file(os.path.join(stage, "model", "model.safetensors"))
  for name in before:
    np.testing.assert_array_equal(before[name], after[name], err_msg=name)
  summary = json.load(open(os.path.join(out, "summary.json")))
  assert summary["methods"]["Hybrid GSHF-DPO"]["reward"] == summary_before["methods"]["Hybrid GSHF-DPO"]["reward"]


def test_a_rerun_with_other_settings_stops_at_the_first_stage_they_change(quick, capsys):
  out, config = quick
  assert cli.main([*QUICK, "--out", out, "--seed", "1"]) == 2  # before: the first run's numbers, exit 0
  err = capsys.readouterr().err.strip()
  assert err == (f"python -m llm builtin: error: {os.path.join(out, 'task')} was made with other settings or inputs "
                 "(seed: 0 -> 1); rerun with --overwrite (on_change=overwrite) to make it again")
  candidates = os.path.join(config.output_dir, "best_of_n", "responses.jsonl.candidates.jsonl")
  with pytest.raises(ValueError, match=rf"^{candidates} was made with other settings or inputs \(num_samples: 4 -> 6\)"):
    pipelines.run_best_of_n(with_overrides(config, {"pipeline.best_of_n": 6}))
  with pytest.raises(ValueError, match=r"rso/dpo was made with other settings or inputs \(dpo.beta: 0.1 -> 0.2\)"):
    pipelines.run_rso(with_overrides(config, {"dpo.beta": 0.2}))  # samples, proxy and pairs reused, DPO differs
  assert pipelines.run_rso(config)["policy"] == os.path.join(config.output_dir, "rso", "dpo", "model")  # unchanged: reused


def test_pipeline_commands_from_the_cli(quick, tmp_path, capsys):
  out, config = quick
  overrides = [f"model.path={config.model.path}", f"data.train={config.data.train}", f"output_dir={tmp_path}",
               f"pipeline.proxy_reward={config.pipeline.proxy_reward}", "pipeline.best_of_n=3",
               f"evaluate.prompts={config.evaluate.prompts}", "pipeline.max_new_tokens=8", "oracle.kind=callable",
               f"oracle.function={builtin.GOLD}"]
  assert cli.main(["best_of_n", *overrides]) == 0
  result = json.loads(capsys.readouterr().out)
  assert result["kl_bound"] == pytest.approx(np.log(3) - 2 / 3)
  rows = data.read_rows(result["responses"])
  candidates = data.read_rows(result["responses"] + ".candidates.jsonl")
  assert len(rows) == 32 and all(len(c["responses"]) == 3 for c in candidates)
  proxy = oracle.reward_model_oracle(config.pipeline.proxy_reward)
  for r, c in zip(rows, candidates):  # the proxy's best finished candidate (the best one when none finished)
    eligible = [y for y, done in stages.responses(c) if done] or c["responses"]
    scores = proxy.rewards([c["prompt"]] * len(eligible), eligible)
    assert r["responses"][0] in eligible and proxy.rewards([c["prompt"]], r["responses"])[0] >= scores.max() - 1e-5
  assert cli.main(["hybrid", *overrides, "pipeline.enhancer=greedy"]) == 2
  assert "pipeline.enhancer must be one of" in capsys.readouterr().err


def test_pairs_with_a_truncated_or_duplicate_response_are_not_labelled():
  prompts = ["a", "b", "c", "d"]
  a = [(" yes", True), (" cut", False), (" same", True), (" good", True)]
  b = [(" no", True), (" fine", True), ("same ", True), (" bad", True)]
  assert stages.trainable_pairs(prompts, a, b) == (["a", "d"], [" yes", " good"], [" no", " bad"],
                                                   {"truncated": 1, "identical": 1})


def candidates(monkeypatch, rewards, stopped):
  """Stubs the sampled candidates (response j of prompt i: "ri-j") and their proxy rewards."""
  rows = [{"prompt": f"p{i}", "responses": [f"r{i}-{j}" for j in range(len(r))], "stopped": list(s)}
          for i, (r, s) in enumerate(zip(rewards, stopped))]
  monkeypatch.setattr(pipelines, "candidates_stage", lambda *a, **k: (rows, False))
  monkeypatch.setattr(pipelines, "proxy_rewards", lambda *a: (np.array(rewards, float), np.array(stopped, bool)))
  return [r["prompt"] for r in rows]


def test_best_of_n_picks_the_best_finished_candidate(monkeypatch, tmp_path):
  prompts = candidates(monkeypatch, [[3.0, 1.0, 2.0, 0.0], [5.0, 4.0, 1.0, 0.0]],
                       [[False, True, True, False], [False, False, False, False]])
  config = with_overrides(C.Config(), {"output_dir": str(tmp_path)})
  best = pipelines.best_of_n_responses(config, "pi", prompts, str(tmp_path / "best.jsonl"), n=4, seed=0, proxy="rm")
  assert [(b["responses"], b["stopped"]) for b in best] == [(["r0-2"], [True]), (["r1-0"], [False])]


def test_rso_never_accepts_a_truncated_candidate(monkeypatch, tmp_path):
  stopped = [[True, False, True, False, True, True]] * 20
  prompts = candidates(monkeypatch, [[0.0, 9.0, 1.0, 8.0, 0.5, 0.2]] * 20, stopped)
  monkeypatch.setattr(pipelines, "proxy_reward_model", lambda config: "rm")
  config = with_overrides(C.Config(), {"output_dir": str(tmp_path), "pipeline.accepted": 6})
  pairs = data.read_rows(pipelines.rso_dataset(config, "pi", prompts, 0.5, str(tmp_path / "pairs.jsonl"), seed=0))
  assert len(pairs) == 20 * 2  # 4 finished candidates give 2 of the 3 pairs asked for
  assert all(p[k].split("-")[1] in "0245" for p in pairs for k in ("chosen", "rejected"))
