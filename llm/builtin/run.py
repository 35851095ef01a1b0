"""`python -m llm` with no command: the paper's comparison (Table 1, Figures 2, 4, 5) in miniature on the
built-in review task (llm.builtin.task), on a laptop-class CPU.

Stages (each persisted under OUT with a manifest of the settings and inputs that made it; a rerun reuses
finished ones, resumes an interrupted one, and stops with one line at a stage made with other sizes or
another seed unless on_change="overwrite" (--overwrite), which makes every such stage again):
  task/          tokenizer (HF tokenizers BPE), grammar SFT data, train / test / OOD prompts
  pi0/           pi0: a small Llama trained from scratch by SFT on grammar samples of mixed sentiment
  d_off.jsonl    D_off: two pi0 samples per train prompt, labelled by the gold oracle (Bradley-Terry)
  methods        SFT on D_off's preferred responses, offline DPO, RSO, multi-step RSO, hybrid GSHF-DPO
                 (equal oracle budgets: |D_off| queries each), best-of-n as an inference-time baseline
  evaluation/    per policy: gold reward (ID and OOD), KL(pi || pi0), win rate against DPO, length,
                 temperature sweep
Outputs: OUT/summary.md (the Table-1-style table), summary.json, frontier.png (reward vs KL per method
and per hybrid iteration), temperature.png.
"""

import contextlib
import dataclasses
import json
import os
import shutil
import time

import jax
import numpy as np

from gshf_jax import atomic
from llm.builtin import task as review_task
from llm.inference import tokenizer as tok
from llm.models import config as model_config
from llm.models import hf_io
from llm.models.transformer import init_model
from llm.preference import evaluate, pipelines, stages
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
  dpo_epochs: int
  batch_size: int
  max_new_tokens: int
  temperatures: tuple
  candidates: int
  save_every: int  # checkpoint interval of every training stage (steps)


SIZES = {
    "default": Sizes(hidden=64, layers=2, vocab=400, sft_examples=8000, sft_epochs=2, train_prompts=1536,
                     test_prompts=512, dpo_epochs=2, batch_size=32, max_new_tokens=24,
                     temperatures=(0.5, 0.7, 1.0, 1.3), candidates=8, save_every=20),
    "quick": Sizes(hidden=32, layers=2, vocab=320, sft_examples=4000, sft_epochs=2, train_prompts=96,
                   test_prompts=32, dpo_epochs=1, batch_size=16, max_new_tokens=24, temperatures=(0.7, 1.0),
                   candidates=4, save_every=1),
}
GOLD = "llm.builtin.task:gold_reward"


def build_task(out, sizes, seed, on_change="stop"):
  """Writes OUT/task/ (tokenizer, sft.jsonl, {train,test,ood}_prompts.jsonl) and OUT/task/pi0_init (a random
  Llama with the tokenizer); returns their paths."""
  folder = os.path.join(out, "task")
  paths = {name: os.path.join(folder, f"{name}.jsonl") for name in ("sft", "train_prompts", "test_prompts",
                                                                     "ood_prompts")}
  paths["init"] = os.path.join(folder, "pi0_init")
  settings = {"seed": seed, **{k: getattr(sizes, k) for k in ("hidden", "layers", "vocab", "sft_examples",
                                                               "train_prompts", "test_prompts")}}
  if manifest.claim(os.path.join(folder, "manifest.json"), manifest.make(settings), name=folder,
                    done=os.path.isdir(paths["init"]), on_change=on_change, clear=lambda: clear_task(paths)):
    return paths
  rng = np.random.default_rng(seed)
  os.makedirs(folder, exist_ok=True)
  tokenizer = tok.train_tokenizer(review_task.tokenizer_corpus(rng, 4000), vocab_size=sizes.vocab)
  data.write_jsonl(paths["sft"], [{"prompt": p, "response": r} for p, r in review_task.corpus(rng, sizes.sft_examples)])
  for name, n, ood in (("train_prompts", sizes.train_prompts, False), ("test_prompts", sizes.test_prompts, False),
                       ("ood_prompts", sizes.test_prompts, True)):
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
      "train.warmup_ratio": 0.03, "train.save_every": sizes.save_every, "train.log_every": 10, "train.seed": seed,
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
      "train.save_every": 100}))


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
  if "temperatures" in values:
    values["temperatures"] = tuple(values["temperatures"])
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


def comparison(out, sizes, seed, on_change, log):
  """The stages of the module docstring, in order (each reused when its manifest matches)."""
  start = time.time()
  step = lambda message: log(f"[{time.time() - start:6.0f}s] {message}")
  step("task: grammar data, tokenizer, prompts")
  paths = build_task(out, sizes, seed, on_change)
  config = base_config(out, sizes, paths, seed, on_change)
  step("pi0: SFT from scratch on grammar samples")
  pi0 = train_pi0(config, paths, sizes)
  step("D_off: pi0 samples labelled by the gold oracle")
  offline_data(config, paths)
  policies = {"pi0": config.model.path}
  step("SFT on D_off's preferred responses")
  trainers.run_sft(with_overrides(config, {"output_dir": os.path.join(out, "sft"), "train.learning_rate": 1e-3}))
  policies["SFT"] = os.path.join(out, "sft", "model")
  step("offline DPO")
  policies["DPO"] = pipelines.dpo_stage(config, os.path.join(out, "dpo"), config.data.train)
  step("RSO")
  policies["RSO"] = pipelines.run_rso(config)["policy"]
  step("multi-step RSO")
  policies["Multi-step RSO"] = pipelines.run_multistep_rso(config)["policy"]
  step("hybrid GSHF-DPO")
  hybrid = pipelines.run_hybrid(config)
  policies["Hybrid GSHF-DPO"] = hybrid["policy"]
  key = jax.random.key(seed + 11)
  results = {}
  for name, policy in policies.items():
    step(f"evaluate {name}")
    results[name] = evaluate_folder(config, name.replace(" ", "_"), policy,
                                    None if name == "DPO" else policies["DPO"], key)
  iterations = {}
  for t, policy in enumerate(hybrid["iterations"][:-1]):
    step(f"evaluate hybrid iteration {t + 1}")
    iterations[f"iteration {t + 1}"] = evaluate_folder(config, f"hybrid_iteration_{t + 1}", policy, None, key,
                                                       temperatures=(1.0,))
  iterations[f"iteration {len(hybrid['iterations'])}"] = results["Hybrid GSHF-DPO"]
  step("best-of-n of pi0")
  best = pipelines.run_best_of_n(config)
  summary = {"settings": {**dataclasses.asdict(sizes), "seed": seed,
                          "run": next((name for name, v in SIZES.items() if v == sizes), "custom"), "pi0_sft_loss":
                          pi0["metrics"].get("eval/loss", pi0["metrics"].get("train/loss"))},
             "methods": results, "hybrid_iterations": iterations, "best_of_n": best,
             "oracle_queries": {"offline": len(pipelines.offline_pairs(config)), "hybrid": hybrid["queries"]},
             "seconds": time.time() - start}
  write_summary(out, summary)
  step(f"done: {os.path.join(out, 'summary.md')}")
  return summary


def write_summary(out, summary):
  """OUT/summary.md, summary.json, frontier.png and temperature.png (atomically)."""
  atomic.write_text(os.path.join(out, "summary.json"), json.dumps(summary, indent=2, default=float))
  s, best = summary["settings"], summary["best_of_n"]
  lines = [f"# Built-in task: Table 1 in miniature ({s['run']} run, seed {s['seed']})", "",
           f"Gold reward = {review_task.GOLD_SCALE:g} x VADER compound sentiment of the response; pi0 = a "
           f"{s['layers']}-layer, {s['hidden']}-wide Llama trained from scratch on grammar samples; "
           f"|D_off| = {summary['oracle_queries']['offline']} pairs from {s['train_prompts']} prompts (pairs with a "
           "truncated or duplicate response left out; = every method's oracle budget; hybrid used "
           f"{summary['oracle_queries']['hybrid']}); {s['test_prompts']} test and {s['test_prompts']} OOD prompts, "
           "one response each; ± is one standard error over prompts. Win rate: against DPO, judged by the gold "
           "reward (win + tie/2, Table 4).", "",
           evaluate.markdown(summary["methods"]).rstrip(), "",
           f"Best-of-{best.get('n', s['candidates'])} of pi0 by the proxy reward model: gold reward "
           f"{best['reward']:.3f} ± {best['reward_se']:.3f}, KL ≤ {best['kl_bound']:.3f} (log n − (n−1)/n).", "",
           "Hybrid GSHF-DPO per iteration (Figure 4):", "", evaluate.markdown(summary["hybrid_iterations"]).rstrip(), "",
           f"Time: {summary['seconds']:.0f} s."]
  atomic.write_text(os.path.join(out, "summary.md"), "\n".join(lines) + "\n")
  evaluate.plot_temperatures(summary["methods"], os.path.join(out, "temperature.png"))
  plot_frontier(summary, os.path.join(out, "frontier.png"))


def plot_frontier(summary, path):
  """Gold reward against KL(pi || pi0) per method and per hybrid iteration (Figures 2 and 4)."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  fig, ax = plt.subplots(figsize=(5.5, 4))
  for name, r in summary["methods"].items():
    ax.errorbar(r.get("kl", 0.0), r["reward"], xerr=r.get("kl_se", 0.0), yerr=r["reward_se"], marker="o",
                capsize=3, label=name, linestyle="none")
  its = summary["hybrid_iterations"]
  ax.plot([r["kl"] for r in its.values()], [r["reward"] for r in its.values()], "k--", alpha=0.5,
          label="hybrid iterations")
  ax.set_xlabel("KL(π ‖ π0)")
  ax.set_ylabel("gold reward")
  ax.legend(fontsize=7)
  fig.tight_layout()
  evaluate.save_figure(fig, path)
