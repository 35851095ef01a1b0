"""The trainers on a tiny Llama and an easy preference task (tests/llm/tiny.py): losses against independent
computations, SFT's loss falls, reward models reach high accuracy, DPO moves implicit rewards the right
way, reference log-probs are computed once, a NaN stops the run and keeps the last good checkpoint, a
SIGKILLed run resumes to the same params, 2 processes equal 1, the paper's config template runs."""

import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tiny
from flax import nnx
from safetensors.numpy import load_file

from gshf_jax import losses
from llm import cli
from llm.inference import tokenizer as tok
from llm.models import hf_io
from llm.preference import oracle
from llm.training import config as C
from llm.training import data, trainers
from llm.training.loop import train

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def run(command, assets, out, **extra):
  return cli.RUNNERS[command](C.load_config(command, None, tiny.overrides(assets, out, **extra)))


def metrics(out):
  with open(os.path.join(out, "metrics.jsonl")) as f:
    return [json.loads(line) for line in f]


@pytest.fixture(scope="module")
def sft(assets, tmp_path_factory):
  out = tmp_path_factory.mktemp("sft")
  summary = run("sft", assets, out, **{"train.learning_rate": 3e-3, "train.epochs": 2, "train.log_every": 1,
                                      "train.tensorboard": "true", "train.snapshots": 3})
  return str(out), summary


@pytest.fixture(scope="module")
def ensemble(assets, sft, tmp_path_factory):
  out = tmp_path_factory.mktemp("reward")
  summary = run("reward", assets, out, **{"model.path": os.path.join(sft[0], "model"), "train.learning_rate": 3e-3,
                                          "train.epochs": 2, "reward.ensemble_size": 2})
  return str(out), summary


def test_sft_loss_is_the_response_nll_and_falls(assets, sft):
  model, _ = hf_io.load_hf_checkpoint(assets["policy"])
  tokenizer = tok.load_tokenizer(assets["policy"])
  examples, _ = data.load_examples(assets["eval"], "sft")
  arrays = data.tokenize_sft(tokenizer, examples, 64, 64)
  ids = np.concatenate([arrays["prompt_ids"], arrays["response_ids"]], 1)
  mask = np.concatenate([arrays["prompt_mask"], arrays["response_mask"]], 1)
  logits = np.asarray(model(jnp.asarray(ids), jnp.asarray(mask)), np.float64)
  logp = logits - np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1, keepdims=True)) - logits.max(-1, keepdims=True)
  token = np.take_along_axis(logp[:, :-1], ids[:, 1:, None], -1)[..., 0]
  response = np.concatenate([np.zeros_like(arrays["prompt_mask"]), arrays["response_mask"]], 1)[:, 1:]
  expected = -(token * response).sum() / response.sum()
  loss, _ = trainers.sft_loss(model, {k: jnp.asarray(v) for k, v in arrays.items()})
  np.testing.assert_allclose(float(loss), expected, rtol=1e-5)

  out, summary = sft
  log = [m for m in metrics(out) if "train/loss" in m]
  assert [m["step"] for m in log] == list(range(1, 17))  # 64 pairs / batch 8 x 2 epochs
  assert log[-1]["train/loss"] < log[0]["train/loss"] - 1.0
  assert summary["metrics"]["eval/loss"] < float(loss) - 1.0  # the held-out response NLL fell too
  assert summary["data"] == {"lines": 64, "malformed": 0, "long_prompt": 0, "kept": 64}
  assert os.path.exists(os.path.join(out, "model", "model.safetensors"))
  assert os.path.exists(os.path.join(out, "model", "tokenizer.json"))
  assert any(f.startswith("events.out.tfevents") for f in os.listdir(os.path.join(out, "tensorboard")))
  # train.snapshots = 3 of 16 steps: HF folders at ceil(16 k / 3), the last one the final model
  shots = trainers.snapshots(out)
  assert [step for step, _ in shots] == [6, 11, 16]
  final = load_file(os.path.join(out, "model", "model.safetensors"))
  weights = [load_file(os.path.join(folder, "model.safetensors")) for _, folder in shots]
  assert all(np.array_equal(weights[-1][k], final[k]) for k in final)
  assert not all(np.array_equal(weights[0][k], final[k]) for k in final)
  assert os.path.exists(os.path.join(shots[0][1], "tokenizer.json"))


def test_reward_ensemble_reaches_high_accuracy_and_scores_like_its_loss(assets, ensemble):
  out, summary = ensemble
  assert summary["ensemble_size"] == 2
  for member in summary["members"]:
    assert member["metrics"]["eval/accuracy"] >= 0.9, member["metrics"]
  folder = os.path.join(out, "member_0", "model")
  model, config = hf_io.load_hf_checkpoint(folder)
  assert config.num_labels == 1
  tokenizer = tok.load_tokenizer(folder)
  pairs, _ = data.load_examples(assets["eval"], "preferences")
  arrays = {k: jnp.asarray(v) for k, v in data.tokenize_preferences(tokenizer, pairs, 64, 64).items()}
  loss, m = trainers.reward_model_loss(model, arrays)
  # the oracle scores text on its own path (re-tokenized, padded to multiples of 32)
  judge = oracle.reward_model_oracle(folder, batch_size=8)
  r_c = judge.rewards([p for p, _, _ in pairs], [c for _, c, _ in pairs])
  r_r = judge.rewards([p for p, _, _ in pairs], [r for _, _, r in pairs])
  np.testing.assert_allclose(float(loss), np.mean(np.logaddexp(0, -(r_c - r_r))), rtol=1e-4)
  np.testing.assert_allclose(float(m["accuracy"]), np.mean(r_c > r_r))


def test_pessimistic_dpo_moves_implicit_rewards_and_uses_cached_reference(assets, sft, ensemble, tmp_path,
                                                                          monkeypatch):
  out = str(tmp_path / "dpo")
  policy = os.path.join(sft[0], "model")
  extra = {"model.path": policy, "train.learning_rate": 1e-3, "train.log_every": 1, "train.save_every": 4,
           "dpo.uncertainty_coef": 0.5, "dpo.reward_ensemble": ensemble[0]}
  summary = run("dpo", assets, out, **extra)
  log = [m for m in metrics(out) if "train/loss" in m]
  assert log[-1]["train/rewards/margins"] > log[0]["train/rewards/margins"] + 0.05
  assert summary["metrics"]["eval/rewards/accuracies"] >= 0.9 and summary["metrics"]["eval/rewards/chosen"] > \
      summary["metrics"]["eval/rewards/rejected"]

  # the cached reference log-probs are log pi0(y | x) of the starting policy, computed independently
  cache = np.load(os.path.join(out, "reference_logprobs_train.npz"))
  model, _ = hf_io.load_hf_checkpoint(policy)
  tokenizer = tok.load_tokenizer(policy)
  pairs, _ = data.load_examples(assets["train"], "preferences")
  prompt_length = len(tokenizer(pairs[5][0])["input_ids"])
  for side, column in ((1, "ref_chosen"), (2, "ref_rejected")):
    ids = np.array([tokenizer(pairs[5][0] + pairs[5][side] + tokenizer.eos_token)["input_ids"]])
    logp = jax.nn.log_softmax(model(jnp.asarray(ids))[0].astype(jnp.float64))
    expected = sum(float(logp[t - 1, ids[0, t]]) for t in range(prompt_length, ids.shape[1]))
    np.testing.assert_allclose(cache[column][5], expected, rtol=1e-5)

  # step 1 (policy = reference): the loss is the mean of -log sigmoid(margin) over the first batch, Eq. (10)
  gamma = np.load(os.path.join(out, "uncertainty_train.npz"))
  first = data.batch_indices(jax.random.key(0), 0, 64, 8)
  margin = 0.5 * (gamma["gamma_chosen"][first] - gamma["gamma_rejected"][first])
  assert np.std(gamma["gamma_chosen"]) > 0
  np.testing.assert_allclose(log[0]["train/loss"], np.mean(np.logaddexp(0, -margin)), rtol=1e-4)

  # a rerun with the outputs gone resumes from the checkpoint and the caches: nothing is recomputed
  os.remove(os.path.join(out, "summary.json"))
  monkeypatch.setattr(trainers, "reference_logprobs", lambda *a: pytest.fail("reference log-probs recomputed"))
  monkeypatch.setattr(trainers, "ensemble_uncertainty", lambda *a: pytest.fail("uncertainty recomputed"))
  again = run("dpo", assets, out, **extra)
  assert again["metrics"]["step"] == 8 and "train/loss" not in again["metrics"]


def test_sft_under_gradient_accumulation_is_the_mean_over_every_token_of_the_step(assets):
  """The train step averages its micro-batches' losses (llm.training.step): with the token weights of
  llm.training.data.microbatches that average is the mean over every response token of the step."""
  model, _ = hf_io.load_hf_checkpoint(assets["policy"])
  tokenizer = tok.load_tokenizer(assets["policy"])
  examples, _ = data.load_examples(assets["train"], "sft")
  arrays = data.tokenize_sft(tokenizer, examples[:8], 64, 64)
  arrays["response_mask"][:4, 2:] = 0  # the first micro-batch has far fewer tokens than the second
  loss = nnx.jit(lambda m, b: trainers.sft_loss(m, b)[0])
  per_token = float(loss(model, {k: jnp.asarray(v) for k, v in arrays.items()}))  # all 8 rows, no weights
  for accum in (1, 2):
    micro = data.microbatches(arrays, np.arange(8), accum)
    step_loss = np.mean([float(loss(model, {k: jnp.asarray(v[a]) for k, v in micro.items()})) for a in range(accum)])
    assert step_loss == pytest.approx(per_token, rel=1e-5)
  halves = [float(loss(model, {k: jnp.asarray(v[r]) for k, v in arrays.items()})) for r in (slice(0, 4), slice(4, 8))]
  assert abs(np.mean(halves) - per_token) > 1e-3  # the mean of micro-batch means would differ


def test_gamma_is_the_members_disagreement_not_their_shifts():
  rng = np.random.default_rng(0)
  chosen, rejected = rng.normal(size=(3, 5)), rng.normal(size=(3, 5))
  gamma = trainers.member_disagreement(chosen, rejected)
  shifts = np.array([[10.0], [-3.0], [0.5]])  # Bradley-Terry leaves each member's shift arbitrary
  shifted = trainers.member_disagreement(chosen + shifts, rejected + shifts)
  for side in gamma:
    np.testing.assert_allclose(shifted[side], gamma[side], atol=1e-12)
  both = np.concatenate([chosen, rejected], 1)
  centred = both - both.mean(1, keepdims=True)
  np.testing.assert_allclose(gamma["gamma_chosen"], centred[:, :5].std(0, ddof=1), atol=1e-12)
  agree = trainers.member_disagreement(np.ones((3, 5)) + shifts, np.zeros((3, 5)) + shifts)
  assert np.all(agree["gamma_chosen"] < 1e-12) and np.all(agree["gamma_rejected"] < 1e-12)


@pytest.mark.parametrize("name, expected", [("hinge", 1.0), ("ipo", (1 / (2 * 0.1)) ** 2)])
def test_hinge_and_ipo_at_the_reference(assets, name, expected):
  model, _ = hf_io.load_hf_checkpoint(assets["policy"])
  tokenizer = tok.load_tokenizer(assets["policy"])
  pairs, _ = data.load_examples(assets["eval"], "preferences")
  batch = {k: jnp.asarray(v) for k, v in data.tokenize_preferences(tokenizer, pairs[:4], 64, 64).items()}
  ref_c, ref_r = trainers.policy_logprobs(model, batch)
  section = C.load_config("dpo", None, [f"dpo.loss={name}"]).dpo
  loss, m = trainers.make_dpo_loss(section)(model, {**batch, "ref_chosen": ref_c, "ref_rejected": ref_r})
  np.testing.assert_allclose(float(loss), expected, rtol=1e-5)
  dpo, _ = trainers.make_dpo_loss(C.load_config("dpo").dpo)(model, {**batch, "ref_chosen": ref_c - 1.0,
                                                                    "ref_rejected": ref_r})
  np.testing.assert_allclose(float(dpo), float(losses.dpo_loss(0.0, 0.0, -1.0, 0.0, 0.1)), rtol=1e-5)


def test_combined_and_token_averaged_losses_see_the_response_token_counts(assets):
  """dpo.loss=dpo,sft with loss_weights (TRL's RPO) and the reference-free SimPO on a real model: the token
  counts are the responses' mask sums, the weights reach the sum, and SimPO ignores the reference."""
  model, _ = hf_io.load_hf_checkpoint(assets["policy"])
  pairs, _ = data.load_examples(assets["eval"], "preferences")
  batch = {k: jnp.asarray(v) for k, v in data.tokenize_preferences(tok.load_tokenizer(assets["policy"]), pairs[:4],
                                                                   64, 64).items()}
  pi_c, pi_r = (np.asarray(v, np.float64) for v in trainers.policy_logprobs(model, batch))
  n_c, n_r = np.asarray(batch["chosen_mask"]).sum(-1), np.asarray(batch["rejected_mask"]).sum(-1)
  assert len(set(n_c.tolist() + n_r.tolist())) > 1  # lengths differ, so a wrong count would show
  refs = {"ref_chosen": jnp.asarray(pi_c - 1.0, jnp.float32), "ref_rejected": jnp.asarray(pi_r, jnp.float32)}
  section = C.load_config("dpo", None, ["dpo.loss=dpo,sft", "dpo.loss_weights=[1.0, 0.5]"]).dpo
  loss, metrics = trainers.make_dpo_loss(section)(model, {**batch, **refs})
  expected = float(losses.dpo_loss(0.0, 0.0, -1.0, 0.0, 0.1)) + 0.5 * -pi_c.sum() / n_c.sum()
  np.testing.assert_allclose(float(loss), expected, rtol=1e-5)
  assert set(metrics) == {"rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies",
                          "logps/chosen", "logps/rejected"}  # TRL's DPOTrainer names
  simpo = trainers.make_dpo_loss(C.load_config("dpo", None, ["dpo.loss=simpo", "dpo.beta=2.0"]).dpo)
  z = 2.0 * (pi_c / n_c - pi_r / n_r) - 0.5
  expected = np.mean(np.logaddexp(0.0, -z))
  for ref_shift in (0.0, 3.0):
    shifted = {k: v + ref_shift for k, v in refs.items()}
    np.testing.assert_allclose(float(simpo(model, {**batch, **shifted})[0]), expected, rtol=1e-5)
  assert not trainers.uses_reference(C.load_config("dpo", None, ["dpo.loss=simpo"]).dpo)
  assert trainers.uses_reference(section)


def test_a_nan_loss_stops_the_run_and_keeps_the_last_good_checkpoint(assets, tmp_path):
  model, _ = hf_io.load_hf_checkpoint(assets["policy"])
  tokenizer = tok.load_tokenizer(assets["policy"])
  examples, _ = data.load_examples(assets["train"], "sft")
  arrays = data.tokenize_sft(tokenizer, examples, 64, 64)
  arrays["poison"] = np.zeros(len(examples), np.float32)
  rng = jax.random.key(0)
  poisoned_step = 5
  arrays["poison"][data.batch_indices(rng, poisoned_step, 64, 8)[0]] = np.nan

  def loss_fn(model, batch):
    loss, m = trainers.sft_loss(model, batch)
    return loss + batch["poison"].sum(), m

  config = C.load_config("sft", None, ["train.batch_size=8", "train.save_every=2", "train.progress=false",
                                       "train.tensorboard=false"]).train
  with pytest.raises(FloatingPointError, match=r"non-finite loss or gradient at step 6 .*last good checkpoint is "
                                               r"step 4"):
    train(model, loss_fn, arrays, config, str(tmp_path))
  from llm.training import checkpoint
  mngr = checkpoint.manager(str(tmp_path / "checkpoints"))
  assert mngr.latest_step() == 4
  assert [m["step"] for m in metrics(str(tmp_path))] == []  # log_every = 10: nothing logged before the stop


def test_non_finite_parameters_are_never_checkpointed(assets, tmp_path):
  """An update that makes the parameters non-finite (here an infinite learning rate, which validation
  refuses, set past it) stops the run before its checkpoint is written: the last checkpoint is finite."""
  model, _ = hf_io.load_hf_checkpoint(assets["policy"])
  tokenizer = tok.load_tokenizer(assets["policy"])
  examples, _ = data.load_examples(assets["train"], "sft")
  arrays = data.tokenize_sft(tokenizer, examples, 64, 64)
  config = C.load_config("sft", None, ["train.batch_size=8", "train.save_every=1", "train.progress=false",
                                       "train.tensorboard=false", "train.warmup_ratio=0"]).train
  with pytest.raises(FloatingPointError, match=r"non-finite parameters after step 1; not saved.*last good "
                                               r"checkpoint is none"):
    train(model, trainers.sft_loss, arrays, dataclasses.replace(config, learning_rate=float("inf")), str(tmp_path))
  from llm.training import checkpoint
  assert checkpoint.manager(str(tmp_path / "checkpoints")).latest_step() is None
  with pytest.raises(ValueError, match="train.learning_rate must be a finite number, got inf"):
    C.load_config("sft", None, ["train.learning_rate=.inf"])


def free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def cli_process(args, env_extra=None):
  env = {**os.environ, "PYTHONPATH": os.pathsep.join([ROOT, os.path.dirname(__file__)]), **(env_extra or {})}
  # the suite's compile setting (tests/conftest.py), with env_extra's flags (e.g. a device count) only
  env["XLA_FLAGS"] = f"{(env_extra or {}).get('XLA_FLAGS', '')} --xla_backend_optimization_level=0".strip()
  return subprocess.Popen([sys.executable, "-m", "llm", *args], env=env, cwd=ROOT, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)


def params_of(out):
  return load_file(os.path.join(out, "model", "model.safetensors"))


@pytest.mark.parametrize("command", [pytest.param("sft", marks=pytest.mark.slow), "dpo"])  # one loop: DPO adds caches
def test_a_sigkilled_run_resumes_to_the_same_params(assets, tmp_path, command):
  extra = {"train.max_steps": 16, "train.save_every": 2, "train.learning_rate": 1e-3, "train.grad_accum": 2}
  reference = cli_process([command, *tiny.overrides(assets, tmp_path / "whole", **extra)])
  killed_dir = tmp_path / "killed"
  victim = cli_process([command, *tiny.overrides(assets, killed_dir, **extra)])
  deadline = time.time() + 120
  while time.time() < deadline:
    folder = killed_dir / "checkpoints"
    steps = [int(d) for d in os.listdir(folder) if d.isdigit()] if folder.exists() else []
    if any(s >= 4 for s in steps):
      break
    time.sleep(0.02)
  victim.send_signal(signal.SIGKILL)
  victim.wait()
  steps = sorted(int(d) for d in os.listdir(killed_dir / "checkpoints") if d.isdigit())
  assert steps and steps[-1] < 16, f"the run was not killed mid-way: {steps}"
  assert not (killed_dir / "model").exists()
  resumed = cli_process([command, *tiny.overrides(assets, killed_dir, **extra)])
  for p in (reference, resumed):
    output = p.communicate(timeout=300)[0]
    assert p.returncode == 0, output
  whole, again = params_of(str(tmp_path / "whole")), params_of(str(killed_dir))
  for name in whole:
    np.testing.assert_array_equal(whole[name], again[name], err_msg=name)
  assert [m["step"] for m in metrics(str(killed_dir))] == [m["step"] for m in metrics(str(tmp_path / "whole"))]


def test_dpo_on_two_processes_equals_one_process(assets, sft, tmp_path):
  extra = {"model.path": os.path.join(sft[0], "model"), "train.max_steps": 3, "train.learning_rate": 1e-3}
  single = cli_process(["dpo", *tiny.overrides(assets, tmp_path / "one", **extra)])
  port = free_port()
  workers = [cli_process(["dpo", *tiny.overrides(assets, tmp_path / "two", **extra),
                          f"distributed.coordinator_address=127.0.0.1:{port}", "distributed.num_processes=2",
                          f"distributed.process_id={i}"]) for i in range(2)]
  for p in [single, *workers]:
    try:
      output = p.communicate(timeout=300)[0]
    except subprocess.TimeoutExpired:
      for q in workers:
        q.kill()
      raise
    assert p.returncode == 0, output
  one, two = params_of(str(tmp_path / "one")), params_of(str(tmp_path / "two"))
  start = load_file(os.path.join(sft[0], "model", "model.safetensors"))
  # float32 sums in another order on 2 processes; Adam's m / sqrt(v) magnifies that for near-zero gradients:
  # atol is 1% of one step (learning rate 1e-3)
  for name in one:
    np.testing.assert_allclose(two[name], one[name], rtol=1e-4, atol=1e-5, err_msg=name)
  assert any(not np.allclose(one[n], start[n]) for n in one)  # training changed the params
  summary = json.load(open(tmp_path / "two" / "summary.json"))
  assert summary["metrics"]["step"] == 3


@pytest.mark.slow  # the template itself is validated for every command by test_config_data.py
def test_the_paper_template_runs_end_to_end_on_tiny_models(assets, sft, ensemble, tmp_path, capsys):
  template = os.path.join(ROOT, "configs", "paper_open_llama_3b.yaml")
  extra = {"model.path": os.path.join(sft[0], "model"), "dpo.reference": os.path.join(sft[0], "model"),
           "train.max_steps": 2, "train.mesh": "{fsdp: -1}", "model.param_dtype": "float32", "model.compute_dtype": "bfloat16",
           "dpo.uncertainty_coef": 0.1, "dpo.reward_ensemble": ensemble[0]}
  assert cli.main(["dpo", "--config", template, *tiny.overrides(assets, tmp_path / "dpo", **extra)]) == 0
  assert json.loads(capsys.readouterr().out)["metrics"]["step"] == 2
  evaluate = {"model.path": str(tmp_path / "dpo" / "model"), "evaluate.prompts": assets["prompts"],
              "evaluate.ood_prompts": assets["prompts"], "evaluate.reference": os.path.join(sft[0], "model"),
              "evaluate.baseline": os.path.join(sft[0], "model"), "evaluate.max_new_tokens": 6,
              "evaluate.batch_size": 8, "oracle.kind": "callable", "oracle.function": "tiny:gold_reward"}
  assert cli.main(["evaluate", "--config", template, *tiny.overrides(assets, tmp_path / "eval", **evaluate)]) == 0
  report = json.load(open(tmp_path / "eval" / "evaluation.json"))
  (result,) = report.values()
  assert set(result["temperatures"]) == {"0.7", "1.0", "1.3"} and "kl" in result and "win_rate" in result
  assert (tmp_path / "eval" / "evaluation_temperature.png").exists()
  bad = {"data.train": str(tmp_path / "missing.jsonl")}
  assert cli.main(["dpo", "--config", template, *tiny.overrides(assets, tmp_path / "bad", **{**extra, **bad})]) == 2
  assert "data.train: " in capsys.readouterr().err
  for command, key, settings in (("dpo", "dpo.reference", extra), ("evaluate", "evaluate.reference", evaluate),
                                 ("evaluate", "evaluate.baseline", evaluate)):
    missing = {**settings, key: str(tmp_path / "no_such_model")}
    assert cli.main([command, "--config", template, *tiny.overrides(assets, tmp_path / "bad2", **missing)]) == 2
    assert f"error: {key}: " in capsys.readouterr().err  # the key of the missing folder, not model.path


def test_a_corrupt_reference_cache_is_recomputed(tmp_path):
  path = str(tmp_path / "reference_logprobs_train.npz")
  with open(path, "wb") as f:
    f.write(b"PK\x03\x04 truncated")
  calls = []
  compute = lambda: calls.append(1) or {"ref_chosen": np.arange(3.0)}
  np.testing.assert_array_equal(trainers.cached_arrays(path, "key", compute)["ref_chosen"], np.arange(3.0))
  np.testing.assert_array_equal(trainers.cached_arrays(path, "key", compute)["ref_chosen"], np.arange(3.0))
  assert calls == [1]  # rewritten once, then read back


@pytest.mark.parametrize("error, code, message", [
    (KeyboardInterrupt(), 130, "interrupted; rerun the same command to resume"),
    (OSError(28, "No space left on device", "/out/metrics.jsonl"), 1,
     "error: No space left on device (/out/metrics.jsonl)"),
])
def test_cli_ends_interrupts_and_os_errors_in_one_line(monkeypatch, capsys, error, code, message):
  def fail(config):
    raise error
  monkeypatch.setitem(cli.RUNNERS, "sft", fail)
  assert cli.main(["sft", "model.path=x", "data.train=y"]) == code
  err = capsys.readouterr().err
  assert err.strip() == f"python -m llm sft: {message}"


def wandb_history(run_file):
  """The history rows of a W&B run file (a LevelDB-style log: a 7-byte header, 32 KiB blocks of records
  with a 7-byte header each: crc32, length, kind 1 full / 2 first / 3 middle / 4 last) as {key: value}."""
  import struct

  from wandb.proto import wandb_internal_pb2
  data = open(run_file, "rb").read()
  position, pending, rows = 7, b"", []
  while position + 7 <= len(data):
    if 32768 - position % 32768 < 7:  # a block's trailer is zero padding
      position += 32768 - position % 32768
      continue
    _, length, kind = struct.unpack("<IHB", data[position:position + 7])
    if kind == 0:
      break
    pending += data[position + 7:position + 7 + length]
    position += 7 + length
    if kind in (1, 4):
      record = wandb_internal_pb2.Record()
      record.ParseFromString(pending)
      pending = b""
      if record.WhichOneof("record_type") == "history":
        rows.append({item.key or "/".join(item.nested_key): json.loads(item.value_json)
                     for item in record.history.item})
  return rows


@pytest.mark.slow  # a training run (~25 s) with the optional wandb extra; the suite's budget
def test_wandb_offline_logs_what_metrics_jsonl_logs(assets, tmp_path):
  pytest.importorskip("wandb", reason="W&B is the optional `wandb` extra")
  out = tmp_path / "sft"
  run("sft", assets, out, **{"train.max_steps": 3, "train.log_every": 1, "train.wandb": "offline",
                             "train.learning_rate": 1e-3})
  run_files = [os.path.join(root, f) for root, _, files in os.walk(out / "wandb")
               for f in files if f.endswith(".wandb")]
  assert len(run_files) == 1
  logged = wandb_history(run_files[0])
  expected = {}
  for row in metrics(str(out)):  # W&B merges the rows of one step (the last step's train and eval metrics)
    expected.setdefault(row["step"], {}).update(row)
  assert [row["_step"] for row in logged] == sorted(expected) == [1, 2, 3]
  for row in logged:
    for key, value in expected[row["_step"]].items():
      if key != "step":
        np.testing.assert_allclose(row[key], value, rtol=1e-12, err_msg=key)
  assert "train/loss" in logged[0] and "eval/loss" in logged[-1]


def test_wandb_settings_are_checked_at_load_time(monkeypatch):
  with pytest.raises(ValueError, match=r"train.wandb must be one of \['offline', 'online'\], got 'cloud'"):
    C.load_config("sft", None, ["train.wandb=cloud"])
  monkeypatch.setitem(sys.modules, "wandb", None)  # as if the extra were not installed
  with pytest.raises(ValueError, match=r'train.wandb=offline needs the wandb package: pip install -e ".\[wandb\]"'):
    C.load_config("sft", None, ["train.wandb=offline"])
