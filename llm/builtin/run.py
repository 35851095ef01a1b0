"""`python -m llm` with no command: the paper's comparison (Table 1, Figures 2, 4, 5) in miniature on the
built-in review task (llm.builtin.task), on a laptop-class CPU.

Stages (each persisted under OUT with a manifest of the settings and inputs that made it; a rerun reuses
finished ones, resumes an interrupted one, and stops with one line at a stage made with other sizes or
another seed unless on_change="overwrite" (--overwrite), which makes every such stage again):
  task/          tokenizer (HF tokenizers BPE), grammar SFT data, train / validation / test / OOD prompts
  pi0/           pi0: a small Llama trained from scratch by SFT on grammar samples of mixed sentiment
  replicate_R/   R = 1..seeds, each from seed + R - 1: D_off (two pi0 samples per train prompt, labelled by
                 the gold oracle, Bradley-Terry), then every method at dpo.beta = 0.1 with equal oracle
                 budgets (|D_off| queries each): SFT on D_off's preferred responses, offline DPO,
                 pessimistic DPO (Eq. 10, a reward ensemble's disagreement as Gamma), RSO, multi-step RSO,
                 hybrid GSHF-DPO; every training run exports Sizes.snapshots policies along the way
  replicate_1/sweep_beta_B/   the KL sweep: each method's last training stage again at dpo.beta = B
  evaluation/    points/: gold reward and KL(pi || pi0) of pi0 and every snapshot on the test prompts, and
                 its gold reward on the validation prompts (llm.preference.frontier); and per final policy
                 of replicate 1: gold reward (ID and OOD), KL, win rate against DPO, length, temperatures
Outputs: OUT/summary.md (claims, the reward-KL frontier with each method selected on the validation
prompts, the matched-KL comparison with DPO, the Table-1-style table), summary.json, frontier.png
(reward against KL along training, per replicate and per beta of the sweep) and temperature.png.
"""

import contextlib
import dataclasses
import json
import math
import os
import shutil
import time

import jax
import numpy as np

from gshf_jax import atomic
from llm.builtin import task as review_task
from llm.inference import sampling
from llm.inference import tokenizer as tok
from llm.models import config as model_config
from llm.models import hf_io
from llm.models.transformer import init_model
from llm.preference import evaluate, frontier, pipelines, stages
from llm.preference import oracle as oracle_lib
from llm.training import data, manifest, trainers
from llm.training.config import Config, require_writable, with_overrides


@dataclasses.dataclass(frozen=True)
class Sizes:
  hidden: int
  layers: int
  vocab: int
  sft_examples: int
  sft_epochs: int
  train_prompts: int  # |D_off| = train_prompts pairs
  test_prompts: int
  validation_prompts: int  # the validation split every method's checkpoint is selected on (Appendix H)
  dpo_epochs: int
  batch_size: int
  max_new_tokens: int
  temperatures: tuple
  candidates: int
  save_every: int  # checkpoint interval of every training stage (steps)
  seeds: int  # replicates r = 0..seeds-1: D_off, its labels and every method's training from seed + r
  snapshots: int  # policies exported along each training run: the points of the reward-KL curves
  sweep_betas: tuple  # the KL coefficients (dpo.beta) besides 0.1 of the sweep (replicate 0)
  ensemble: int  # pessimistic DPO's reward ensemble size


SIZES = {
    "default": Sizes(hidden=64, layers=2, vocab=400, sft_examples=8000, sft_epochs=2, train_prompts=768,
                     test_prompts=512, validation_prompts=128, dpo_epochs=2, batch_size=32, max_new_tokens=24,
                     temperatures=(0.5, 0.7, 1.0, 1.3), candidates=8, save_every=20, seeds=3, snapshots=3,
                     sweep_betas=(0.05, 0.3), ensemble=3),
    "quick": Sizes(hidden=32, layers=2, vocab=320, sft_examples=4000, sft_epochs=2, train_prompts=96,
                   test_prompts=32, validation_prompts=32, dpo_epochs=1, batch_size=16, max_new_tokens=24,
                   temperatures=(0.7, 1.0), candidates=4, save_every=1, seeds=2, snapshots=2, sweep_betas=(0.3,),
                   ensemble=2),
}
GOLD = "llm.builtin.task:gold_reward"


def build_task(out, sizes, seed, on_change="stop"):
  """Writes OUT/task/ (tokenizer, sft.jsonl, {train,test,ood}_prompts.jsonl) and OUT/task/pi0_init (a random
  Llama with the tokenizer); returns their paths."""
  folder = os.path.join(out, "task")
  paths = {name: os.path.join(folder, f"{name}.jsonl") for name in ("sft", "train_prompts", "test_prompts",
                                                                     "ood_prompts", "validation_prompts")}
  paths["init"] = os.path.join(folder, "pi0_init")
  settings = {"seed": seed, **{k: getattr(sizes, k) for k in ("hidden", "layers", "vocab", "sft_examples",
                                                               "train_prompts", "test_prompts", "validation_prompts")}}
  if manifest.claim(os.path.join(folder, "manifest.json"), manifest.make(settings), name=folder,
                    done=os.path.isdir(paths["init"]), on_change=on_change, clear=lambda: clear_task(paths)):
    return paths
  rng = np.random.default_rng(seed)
  os.makedirs(folder, exist_ok=True)
  tokenizer = tok.train_tokenizer(review_task.tokenizer_corpus(rng, 4000), vocab_size=sizes.vocab)
  data.write_jsonl(paths["sft"], [{"prompt": p, "response": r} for p, r in review_task.corpus(rng, sizes.sft_examples)])
  for name, n, ood in (("train_prompts", sizes.train_prompts, False), ("test_prompts", sizes.test_prompts, False),
                       ("ood_prompts", sizes.test_prompts, True),
                       ("validation_prompts", sizes.validation_prompts, False)):
    data.write_jsonl(paths[name], [{"prompt": p} for p in review_task.prompts(rng, n, ood=ood)])
  config = model_config.ModelConfig(
      model_type="llama", vocab_size=len(tokenizer), hidden_size=sizes.hidden, num_layers=sizes.layers, num_heads=4,
      num_kv_heads=2, head_dim=sizes.hidden // 4, intermediate_size=3 * sizes.hidden, max_position_embeddings=128,
      norm_eps=1e-5, pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
      eos_token_id=tokenizer.eos_token_id)
  model = init_model(config, seed)

  def fill(folder):
    hf_io.save_hf_checkpoint(model, folder)
    tokenizer.save_pretrained(folder)

  atomic.write_folder(paths["init"], fill)
  return paths


def clear_task(paths):
  for path in paths.values():
    if os.path.isdir(path):
      shutil.rmtree(path)
    elif os.path.exists(path):
      os.unlink(path)


def base_config(out, sizes, paths, seed, on_change="stop"):
  """The Config every stage starts from: the gold oracle, lengths, sampling and training sizes."""
  return with_overrides(Config(), {
      "output_dir": out, "on_change": on_change, "model.path": os.path.join(out, "pi0", "model"), "data.train": os.path.join(out, "d_off.jsonl"),
      "data.max_prompt_length": 16, "data.pad_to_max_length": True, "data.max_response_length": sizes.max_new_tokens,
      "train.batch_size": sizes.batch_size, "train.epochs": sizes.dpo_epochs, "train.learning_rate": 5e-4,
      "train.warmup_ratio": 0.03, "train.save_every": sizes.save_every, "train.snapshots": sizes.snapshots, "train.log_every": 10, "train.seed": seed,
      "train.progress": False, "train.tensorboard": False, "dpo.beta": 0.1,
      "oracle.kind": "callable", "oracle.function": GOLD, "oracle.labels": "bt",
      "pipeline.prompts": paths["train_prompts"], "pipeline.candidates": sizes.candidates, "pipeline.accepted": 2,
      "pipeline.max_new_tokens": sizes.max_new_tokens, "pipeline.batch_size": 64,
      "pipeline.reward_learning_rate": 1e-3, "pipeline.enhancer_n": sizes.candidates,
      "pipeline.best_of_n": sizes.candidates, "evaluate.prompts": paths["test_prompts"],
      "evaluate.ood_prompts": paths["ood_prompts"], "evaluate.max_new_tokens": sizes.max_new_tokens,
      "evaluate.batch_size": 64, "evaluate.temperatures": list(sizes.temperatures)})


def train_pi0(config, paths, sizes):
  return trainers.run_sft(with_overrides(config, {
      "output_dir": os.path.join(config.output_dir, "pi0"), "model.path": paths["init"], "data.train": paths["sft"],
      "train.learning_rate": 3e-3, "train.epochs": sizes.sft_epochs, "train.batch_size": 32,
      "train.save_every": 100, "train.snapshots": 0}))


def offline_data(config, paths):
  """D_off: two samples of pi0 per train prompt, labelled by the gold oracle (pairs with a response cut at
  max_new_tokens or two identical responses are left out)."""
  prompts, _ = data.load_examples(paths["train_prompts"], "prompts")
  rows = pipelines.sample_responses(config, config.model.path, prompts, os.path.join(config.output_dir, "d_off_samples.jsonl"),
                                    num_samples=2, seed=config.train.seed + 7)
  pipelines.label_with_oracle(config, prompts, [stages.responses(r)[0] for r in rows],
                              [stages.responses(r)[1] for r in rows], config.data.train, seed=config.train.seed + 7)
  return config.data.train


def evaluate_folder(config, name, policy, baseline, key, *, temperatures=None):
  """evaluate_policy of one policy folder, cached in OUT/evaluation/NAME.json."""
  path = os.path.join(config.output_dir, "evaluation", f"{name}.json")
  settings = {"evaluate": dataclasses.asdict(config.evaluate), "oracle": dataclasses.asdict(config.oracle),
              "temperatures": list(temperatures or config.evaluate.temperatures), "key": str(jax.random.key_data(key)),
              "max_prompt_length": config.data.max_prompt_length, "param_dtype": config.model.param_dtype,
              "compute_dtype": config.model.compute_dtype}
  inputs = {"policy": policy, "reference": config.model.path, "baseline": baseline}
  if manifest.claim_file(path, settings, on_change=config.on_change, paths=inputs):
    with open(path) as f:
      return json.load(f)
  prompts, _ = data.load_examples(config.evaluate.prompts, "prompts")
  ood, _ = data.load_examples(config.evaluate.ood_prompts, "prompts")
  result = stages.evaluate_folder(config, policy, prompts, key, reference=config.model.path, baseline=baseline,
                                  ood_prompts=ood, temperatures=temperatures)
  atomic.write_text(path, json.dumps(result, indent=2, default=float))
  return result


def load_sizes(path):
  """Sizes from a YAML file of Sizes fields (missing ones from the default run), e.g. configs/builtin_gpu.yaml."""
  import yaml
  if not os.path.isfile(path):
    raise ValueError(f"--config {path}: no such file")
  with open(path) as f:
    try:
      values = yaml.safe_load(f) or {}
    except yaml.YAMLError as e:
      raise ValueError(f"{path}: not valid YAML: {e}") from None
  fields = {f.name for f in dataclasses.fields(Sizes)}
  unknown = sorted(set(values) - fields) if isinstance(values, dict) else ["(not a mapping)"]
  if unknown:
    raise ValueError(f"{path}: unknown keys {unknown}; accepted: {sorted(fields)}")
  small = sorted(k for k, v in values.items() if isinstance(v, int) and v < 1)
  if small:
    raise ValueError(f"{path}: {small} must be integers >= 1")
  betas = values.get("sweep_betas", ())
  if any(not isinstance(b, (int, float)) or not math.isfinite(b) or b <= 0 for b in betas):
    raise ValueError(f"{path}: sweep_betas must be finite numbers > 0, got {list(betas)}")
  if values.get("ensemble", 2) < 2:
    raise ValueError(f"{path}: ensemble must be >= 2 (pessimistic DPO's uncertainty is the members' disagreement)")
  for name in ("temperatures", "sweep_betas"):
    if name in values:
      values[name] = tuple(values[name])
  return dataclasses.replace(SIZES["default"], **values)


def run_builtin(out="results/llm", *, sizes=None, quick=False, seed=0, on_change="stop", log=print):
  """Runs (or resumes) the whole comparison; returns the summary dict also written to OUT/summary.json.
  sizes: a Sizes (default: SIZES["quick"] with quick, else SIZES["default"]); on_change: what a stage made
  with other settings meets (llm.training.manifest: "stop" with one line, or "overwrite")."""
  require_writable("--out", out, folder=True)
  with compilation_cache(os.path.join(out, ".jax_cache")):
    return comparison(out, sizes or SIZES["quick" if quick else "default"], seed, on_change, log)


@contextlib.contextmanager
def compilation_cache(folder):
  """JAX's persistent compilation cache in `folder` while the run lasts (its many training and sampling
  stages compile the same programs: about a quarter of the quick run's time), then the previous settings.
  A cache the caller already configured (jax_compilation_cache_dir) is used instead."""
  if jax.config.jax_compilation_cache_dir:
    yield
    return
  settings = {"jax_compilation_cache_dir": folder, "jax_persistent_cache_min_compile_time_secs": 0.0,
              "jax_persistent_cache_min_entry_size_bytes": 0}
  previous = {name: getattr(jax.config, name) for name in settings}
  for name, value in settings.items():
    jax.config.update(name, value)
  try:
    yield
  finally:
    for name, value in previous.items():
      jax.config.update(name, value)


METHODS = ("SFT", "DPO", "Pessimistic DPO", "RSO", "Multi-step RSO", "Hybrid GSHF-DPO")
PAPER_ABOVE_DPO = ("RSO", "Multi-step RSO", "Hybrid GSHF-DPO")  # the paper's Table 1 and Figure 2
PESSIMISM = 1.0  # dpo.uncertainty_coef of pessimistic DPO: margin = 1 x (Gamma_w - Gamma_l), Eq. (10)


def comparison(out, sizes, seed, on_change, log):
  """The stages of the module docstring, in order (each reused when its manifest matches)."""
  start = time.time()
  step = lambda message: log(f"[{time.time() - start:6.0f}s] {message}")
  step("task: grammar data, tokenizer, prompts")
  paths = build_task(out, sizes, seed, on_change)
  config = base_config(out, sizes, paths, seed, on_change)
  step("pi0: SFT from scratch on grammar samples")
  pi0 = train_pi0(config, paths, sizes)
  runs = []
  for r in range(sizes.seeds):
    replicate = replicate_config(config, r)
    step(f"replicate {r + 1}/{sizes.seeds}: D_off, then every method")
    offline_data(replicate, paths)
    runs.append(train_methods(replicate, sizes, step if r == 0 else lambda message: None))
  step(f"KL sweep (replicate 1): dpo.beta in {list(sizes.sweep_betas)}")
  sweep = {beta: sweep_methods(replicate_config(config, 0), runs[0], beta) for beta in sizes.sweep_betas}
  step("reward-KL points of every snapshot")
  points = score_points(config, paths["validation_prompts"], runs, sweep, jax.random.key(seed + 13))
  frontier = frontier_summary(config.model.path, runs, sweep, points)
  policies = {"pi0": config.model.path, **{name: runs[0]["final"][name] for name in METHODS}}
  key = jax.random.key(seed + 11)
  results = {}
  for name, policy in policies.items():
    step(f"evaluate {name} (replicate 1)")
    results[name] = evaluate_folder(config, name.replace(" ", "_"), policy,
                                    None if name == "DPO" else policies["DPO"], key)
  iterations = {}
  hybrid = runs[0]["hybrid"]
  for t, policy in enumerate(hybrid["iterations"][:-1]):
    step(f"evaluate hybrid iteration {t + 1}")
    iterations[f"iteration {t + 1}"] = evaluate_folder(config, f"hybrid_iteration_{t + 1}", policy, None, key,
                                                       temperatures=(1.0,))
  iterations[f"iteration {len(hybrid['iterations'])}"] = results["Hybrid GSHF-DPO"]
  step("best-of-n of pi0")
  best = pipelines.run_best_of_n(replicate_config(config, 0))
  summary = {"settings": {**dataclasses.asdict(sizes), "seed": seed,
                          "run": next((name for name, v in SIZES.items() if v == sizes), "custom"), "pi0_sft_loss":
                          pi0["metrics"].get("eval/loss", pi0["metrics"].get("train/loss"))},
             "methods": results, "hybrid_iterations": iterations, "best_of_n": best, "frontier": frontier,
             "oracle_queries": {"offline": len(pipelines.offline_pairs(replicate_config(config, 0))),
                                "hybrid": hybrid["queries"]},
             "seconds": time.time() - start}
  summary["claims"] = claims(summary)
  write_summary(out, summary)
  step(f"done: {os.path.join(out, 'summary.md')}")
  return summary


def replicate_config(config, r):
  """Replicate r's config: its own folder, D_off and training seed (seed + r); pi0 and the prompts are shared.
  The proxy reward model of RSO and best-of-n is member 0 of pessimistic DPO's reward ensemble (the BT
  model on D_off that pipelines.proxy_reward_model would train: same data, seed and settings)."""
  out = os.path.join(config.output_dir, f"replicate_{r + 1}")
  return with_overrides(config, {"output_dir": out, "data.train": os.path.join(out, "d_off.jsonl"),
                                 "train.seed": config.train.seed + r,
                                 "pipeline.proxy_reward": os.path.join(out, "reward_ensemble", "member_0", "model")})


def train_methods(config, sizes, step):
  """Every method of one replicate at dpo.beta = 0.1. Returns {"final": {method: policy folder}, "path":
  {method: [snapshot folders in training order]}, "hybrid": run_hybrid's result, "multistep": its steps,
  "rso_pairs": the RSO pairs file, "ensemble": the reward ensemble folder}."""
  out = config.output_dir
  step("SFT on D_off's preferred responses")
  trainers.run_sft(with_overrides(config, {"output_dir": os.path.join(out, "sft"), "train.learning_rate": 1e-3}))
  step("offline DPO")
  dpo = pipelines.dpo_stage(config, os.path.join(out, "dpo"), config.data.train)
  step(f"pessimistic DPO (Eq. 10; a reward ensemble of {sizes.ensemble} on D_off)")
  ensemble = os.path.join(out, "reward_ensemble")
  trainers.run_reward(with_overrides(config, {"output_dir": ensemble, "reward.ensemble_size": sizes.ensemble,
                                              "train.learning_rate": config.pipeline.reward_learning_rate}))
  pessimistic = pessimistic_dpo(config, os.path.join(out, "pdpo"), ensemble)
  step("RSO")
  rso = pipelines.run_rso(config)
  step("multi-step RSO")
  multistep = pipelines.run_multistep_rso(config)
  step("hybrid GSHF-DPO")
  hybrid = pipelines.run_hybrid(config)
  final = {"SFT": os.path.join(out, "sft", "model"), "DPO": dpo, "Pessimistic DPO": pessimistic,
           "RSO": rso["policy"], "Multi-step RSO": multistep["policy"], "Hybrid GSHF-DPO": hybrid["policy"]}
  path = {name: run_snapshots(folder) for name, folder in final.items()}
  path["Multi-step RSO"] = [s for folder in multistep["steps"] for s in run_snapshots(folder)]
  return {"final": final, "path": path, "hybrid": hybrid, "multistep": multistep["steps"], "rso_pairs": rso["pairs"],
          "ensemble": ensemble}


def pessimistic_dpo(config, out, ensemble, **overrides):
  """Pessimistic DPO (Eq. 10) from pi0 on D_off with the reward ensemble's disagreement as Gamma."""
  return pipelines.dpo_stage(config, out, config.data.train, **{"dpo.uncertainty_coef": PESSIMISM,
                                                                "dpo.reward_ensemble": ensemble, **overrides})


def run_snapshots(model_folder):
  """The snapshot folders along the training run whose output is `model_folder` (RUN/model), in step order."""
  return [folder for _, folder in trainers.snapshots(os.path.dirname(model_folder))]


def sweep_methods(config, run, beta):
  """The KL sweep at dpo.beta = `beta`: each method's last training stage again at that KL coefficient, on
  the same data (DPO and pessimistic DPO on D_off, RSO on its pairs, multi-step RSO's last step from the
  previous step's policy, hybrid's last iteration on all its pairs; the data of the last two were collected
  at 0.1). SFT has no KL coefficient. Returns {method: [snapshot folders in training order]}."""
  out = os.path.join(config.output_dir, f"sweep_beta_{beta:g}")
  stage = lambda name, data_file, **o: run_snapshots(pipelines.dpo_stage(config, os.path.join(out, name), data_file,
                                                                        **{"dpo.beta": beta, **o}))
  steps = run["multistep"]
  last_pairs = os.path.join(os.path.dirname(os.path.dirname(steps[-1])), "pairs.jsonl")
  hybrid_pairs = os.path.join(os.path.dirname(os.path.dirname(run["hybrid"]["policy"])), "all_pairs.jsonl")
  previous = steps[-2] if len(steps) > 1 else config.model.path
  return {"DPO": stage("dpo", config.data.train),
          "Pessimistic DPO": run_snapshots(pessimistic_dpo(config, os.path.join(out, "pdpo"), run["ensemble"],
                                                           **{"dpo.beta": beta})),
          "RSO": stage("rso", run["rso_pairs"]),
          "Multi-step RSO": [s for folder in steps[:-1] for s in run_snapshots(folder)]
          + stage("multistep_rso", last_pairs, **{"model.path": previous}),
          "Hybrid GSHF-DPO": stage("hybrid", hybrid_pairs)}


def score_points(config, validation_prompts, runs, sweep, key):
  """frontier.curve_point of pi0 and of every snapshot, on the test prompts (reward and KL) and the
  validation prompts (mean reward: what selection sees), each cached in OUT/evaluation/points/. The same
  keys for every policy: one response per prompt, common random numbers. Returns {folder: point}."""
  folders = [config.model.path] + sorted({f for run in runs for path in run["path"].values() for f in path}
                                         | {f for paths in sweep.values() for path in paths.values() for f in path})
  test, _ = data.load_examples(config.evaluate.prompts, "prompts")
  validation, _ = data.load_examples(validation_prompts, "prompts")
  e, loaded, points = config.evaluate, {}, {}
  for folder in folders:
    name = os.path.relpath(folder, config.output_dir).replace(os.sep, "__")
    path = os.path.join(config.output_dir, "evaluation", "points", f"{name}.json")
    settings = {"key": str(jax.random.key_data(key)), "max_new_tokens": e.max_new_tokens, "batch_size": e.batch_size,
                "oracle": dataclasses.asdict(config.oracle), "max_prompt_length": config.data.max_prompt_length,
                "compute_dtype": config.model.compute_dtype}
    if manifest.claim_file(path, settings, on_change=config.on_change,
                           paths={"policy": folder, "reference": config.model.path},
                           values={"test": test, "validation": validation}):
      with open(path) as f:
        points[folder] = json.load(f)
      continue
    if "reference" not in loaded:
      loaded["reference"] = trainers.load_model(config.model, None, path=config.model.path)[0]
      loaded["oracle"] = oracle_lib.make_oracle(config.oracle)
    model, tokenizer = trainers.load_model(config.model, None, path=folder)
    kwargs = dict(max_new_tokens=e.max_new_tokens, batch_size=e.batch_size,
                  max_prompt_length=config.data.max_prompt_length)
    point = frontier.curve_point(model, loaded["reference"], tokenizer, loaded["oracle"], test, key, **kwargs)
    held_out = sampling.sample_texts(model, tokenizer, validation, jax.random.fold_in(key, 1), temperature=1.0,
                                     **kwargs)
    point["validation_reward"] = float(np.mean(loaded["oracle"].rewards(validation, held_out["responses"])))
    atomic.write_text(path, json.dumps(point))
    points[folder] = point
  return points


def frontier_summary(pi0, runs, sweep, points):
  """The reward-KL frontier numbers (Figures 2 and 4): per method, the final policy and the one selected on
  the validation prompts (replicate means, each with the standard error over replicates, or over prompts
  with one replicate), every replicate's path at 0.1 and the sweep's paths, and the matched-KL comparison
  with DPO (frontier.matched_kl_comparison over the paths at 0.1)."""
  strip = lambda p: {k: v for k, v in p.items() if k not in ("rewards", "log_ratios")}
  path_points = lambda folders: [strip(points[pi0])] + [{**strip(points[f]), "folder": f} for f in folders]
  rows = {}
  for name in METHODS:
    trained = [run["path"][name] + ([f for paths in sweep.values() for f in paths.get(name, [])] if r == 0 else [])
               for r, run in enumerate(runs)]
    chosen = [frontier.select_by_validation([{**points[f], "folder": f} for f in folders]) for folders in trained]
    finals = [points[run["path"][name][-1]] for run in runs]
    gain = frontier.paired_difference([c["rewards"] for c in chosen], [points[pi0]["rewards"]] * len(chosen))
    rows[name] = {"final": replicate_mean(finals), "selected": {**replicate_mean(chosen),
                                                                "minus_pi0": (gain["difference"], gain["se"]),
                                                                "folders": [c["folder"] for c in chosen]},
                  "paths": [path_points(run["path"][name]) for run in runs],
                  "sweep": {f"{beta:g}": path_points(paths[name]) for beta, paths in sweep.items() if name in paths}}
  matched = frontier.matched_kl_comparison(
      {name: [[points[pi0]] + [points[f] for f in run["path"][name]] for run in runs] for name in METHODS}, "DPO")
  return {"methods": rows, "matched_kl": matched, "pi0": strip(points[pi0]), "replicates": len(runs)}


def replicate_mean(points):
  """Mean test reward and KL of one point per replicate, with standard errors over replicates (over
  prompts when there is one replicate)."""
  if len(points) == 1:
    return {k: points[0][k] for k in ("reward", "reward_se", "kl", "kl_se")}
  reward, reward_se = evaluate.mean_se([p["reward"] for p in points])
  kl, kl_se = evaluate.mean_se([p["kl"] for p in points])
  return {"reward": reward, "reward_se": reward_se, "kl": kl, "kl_se": kl_se}


def claims(summary):
  """The summary's claim rows: {kind, claim, measured, verdict, note}, as in bandit_sim's summaries: a sanity
  check holds by construction, a finding could have come out otherwise (the note says what would have
  falsified it)."""
  f, rows = summary["frontier"], []
  n = f["replicates"]
  kl0 = summary["methods"]["pi0"]["kl"]
  rows.append({"kind": "sanity check", "claim": "KL(π0 ‖ π0) estimated from samples is 0",
               "measured": f"{kl0:.2e}", "verdict": "held" if abs(kl0) < 1e-5 else "did not hold",
               "note": "true by construction (the same model scores both log-probabilities)"})
  for name, comparisons in f["matched_kl"].items():
    top = comparisons[-1]
    measured = f"{top['difference']:+.3f} ± {top['se']:.3f} at KL {top['kl']:.3f} ({n} replicates)"
    falsifier = "(prompts, replicates; Holm over every method and KL level)"
    if name in PAPER_ABOVE_DPO:
      rows.append({"kind": "finding", "claim": f"{name} beats DPO in gold reward at matched KL (the paper: Table 1, "
                   "Figure 2)", "measured": measured,
                   "verdict": "held" if top["verdict"] == "better" else f"did not hold ({top['verdict']})",
                   "note": f"falsified if the paired difference were not significantly positive {falsifier}"})
    else:
      other = ("a significant paired difference of either sign" if top["verdict"] == "no significant difference"
               else "a paired difference that is not significant or of the other sign")
      rows.append({"kind": "finding", "claim": f"{name} vs DPO in gold reward at matched KL", "measured": measured,
                   "verdict": top["verdict"], "note": f"falsified if {other} {falsifier}"})
  for name in METHODS:
    mean, se = f["methods"][name]["selected"]["minus_pi0"]
    rows.append({"kind": "finding", "claim": f"{name}, selected on the validation prompts, beats π0 in gold reward",
                 "measured": f"{mean:+.3f} ± {se:.3f} ({n} replicates)",
                 "verdict": "held" if mean - 2 * se > 0 else "did not hold",
                 "note": "falsified if the paired difference were within 2 standard errors of 0 or negative"})
  return rows


def write_summary(out, summary):
  """OUT/summary.md, summary.json, frontier.png and temperature.png (atomically)."""
  atomic.write_text(os.path.join(out, "summary.json"), json.dumps(summary, indent=2, default=float))
  s, best, f = summary["settings"], summary["best_of_n"], summary["frontier"]
  lines = [f"# Built-in task: Table 1 and Figure 2 in miniature ({s['run']} run, seed {s['seed']})", "",
           f"Gold reward = {review_task.GOLD_SCALE:g} x VADER compound sentiment of the response; pi0 = a "
           f"{s['layers']}-layer, {s['hidden']}-wide Llama trained from scratch on grammar samples; "
           f"|D_off| = {summary['oracle_queries']['offline']} pairs from {s['train_prompts']} prompts (pairs with a "
           "truncated or duplicate response left out; = every method's oracle budget; hybrid used "
           f"{summary['oracle_queries']['hybrid']}); {f['replicates']} replicates (D_off, labels and training "
           f"from seed + r; pi0 shared); {s['test_prompts']} test, {s['validation_prompts']} validation and "
           f"{s['test_prompts']} OOD prompts, one response each.", "",
           "## Claims", "", "| kind | claim | measured | verdict | note |", "| --- | --- | --- | --- | --- |"]
  lines += [f"| {c['kind']} | {c['claim']} | {c['measured']} | {c['verdict']} | {c['note']} |" for c in summary["claims"]]
  lines += ["", "## Reward-KL frontier (Figure 2)", "",
            "Test prompts; mean over replicates ± s.e. over replicates. *Final*: the end of training at dpo.beta = "
            "0.1. *Selected*: the snapshot (any step, any β of the sweep) with the highest gold reward on the "
            "validation prompts, per replicate (Appendix H's selection of DPO, given to every method). "
            f"π0: {f['pi0']['reward']:.3f} ± {f['pi0']['reward_se']:.3f}.", "",
            "| method | final reward | final KL | selected reward | selected KL | selected − π0 (paired) |",
            "| --- | --- | --- | --- | --- | --- |"]
  for name, r in f["methods"].items():
    fin, sel = r["final"], r["selected"]
    lines.append(f"| {name} | {fin['reward']:.3f} ± {fin['reward_se']:.3f} | {fin['kl']:.3f} ± {fin['kl_se']:.3f} | "
                 f"{sel['reward']:.3f} ± {sel['reward_se']:.3f} | {sel['kl']:.3f} ± {sel['kl_se']:.3f} | "
                 f"{sel['minus_pi0'][0]:+.3f} ± {sel['minus_pi0'][1]:.3f} |")
  lines += ["", "Matched KL (llm.preference.frontier): reward − DPO's at the same KL on each training path at 0.1, "
            "paired by prompt; s.e. = the larger of over prompts and over replicates; Holm over the table.", "",
            "| method | KL | reward − DPO | s.e. (prompts) | s.e. (replicates) | verdict |", "| --- | --- | --- | --- | --- | --- |"]
  for name, comparisons in f["matched_kl"].items():
    lines += [f"| {name} | {c['kl']:.3f} | {c['difference']:+.3f} | {c['se_prompts']:.3f} | {c['se_seeds']:.3f} | "
              f"{c['verdict']} |" for c in comparisons]
  lines += ["", "## Table 1 (replicate 1's final policies; win rate against DPO by the gold reward, win + tie/2, "
            "Table 4)", "", evaluate.markdown(summary["methods"]).rstrip(), "",
            f"Best-of-{best.get('n', s['candidates'])} of pi0 by the proxy reward model: gold reward "
            f"{best['reward']:.3f} ± {best['reward_se']:.3f}, KL ≤ {best['kl_bound']:.3f} (log n − (n−1)/n).", "",
            "Hybrid GSHF-DPO per iteration (Figure 4):", "", evaluate.markdown(summary["hybrid_iterations"]).rstrip(), "",
            f"Time of this invocation: {summary['seconds']:.0f} s (stages reused from an earlier one not counted)."]
  atomic.write_text(os.path.join(out, "summary.md"), "\n".join(lines) + "\n")
  evaluate.plot_temperatures(summary["methods"], os.path.join(out, "temperature.png"))
  plot_frontier(summary, os.path.join(out, "frontier.png"))


def plot_frontier(summary, path):
  """Gold reward against KL(pi || pi0) (Figures 2 and 4): each method's training paths at dpo.beta = 0.1
  (one line per replicate), its sweep's paths (dotted), and the hybrid iterations."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  fig, ax = plt.subplots(figsize=(6.5, 4.5))
  for i, (name, r) in enumerate(summary["frontier"]["methods"].items()):
    color = f"C{i}"
    for k, points in enumerate(r["paths"]):
      ax.plot([p["kl"] for p in points], [p["reward"] for p in points], "o-", color=color, alpha=0.8, markersize=3,
              label=name if k == 0 else None)
    for beta, points in r["sweep"].items():
      ax.plot([p["kl"] for p in points], [p["reward"] for p in points], "x:", color=color, alpha=0.6, markersize=4)
  its = summary["hybrid_iterations"]
  ax.plot([r["kl"] for r in its.values()], [r["reward"] for r in its.values()], "k--", alpha=0.5,
          label="hybrid iterations")
  ax.set_xlabel("KL(π ‖ π0)")
  ax.set_ylabel("gold reward (test prompts)")
  ax.set_title("solid: β = 0.1 per replicate; dotted: the β sweep", fontsize=8)
  ax.legend(fontsize=7)
  fig.tight_layout()
  evaluate.save_figure(fig, path)
