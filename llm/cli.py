"""python -m llm [COMMAND] [--config FILE] [key=value ...]

With no command: the built-in task's whole comparison (llm.builtin.run; --quick, --out, --seed). Commands:
sft, reward, dpo (trainers, see llm.training.trainers), sample (responses to prompts), label (pairs labelled by the
preference oracle), evaluate (gold reward, KL, win rate, temperature sweep), and the paper's pipelines
rso, multistep_rso, hybrid, online, best_of_n (llm.preference.pipelines). Settings are
llm.training.config's sections (model.*, data.*, train.*, dpo.*, reward.*, oracle.*, sample.*, label.*,
evaluate.*, distributed.*, output_dir) from the YAML file and the overrides. The same command runs on
every host of a multi-host job (jax.distributed is initialized from distributed.* or the environment).
With --compile TOPOLOGY, sft / reward / dpo compile their training step for a TPU slice, and sample its
generation for one chip of it, and report whether it fits, instead of running (llm.training.aot).
"""

import argparse
import dataclasses
import json
import os
import sys

import jax

from llm.inference import tokenizer as tok
from llm.parallel import distributed
from llm.preference import evaluate, pipelines, stages
from llm.training import config as config_lib
from llm.training import data, trainers
from llm.training.config import require_file, require_writable


def read_prompts(config, tokenizer, path, key):
  prompts, _ = data.load_examples(require_file(key, path), "prompts", skip_malformed=config.data.skip_malformed)
  kept, dropped = data.filter_prompts(prompts, tokenizer, config.data.max_prompt_length)
  if not kept:
    raise ValueError(f"{key}: {path}: every prompt is longer than data.max_prompt_length")
  return kept, dropped


def run_sample(config):
  """sample.num_samples responses to each prompt of sample.prompts, written to sample.output as
  {"prompt", "responses"} lines."""
  s = config.sample
  path = require_file("model.path", config.model.path, folder=True)
  prompts, dropped = read_prompts(config, tok.load_tokenizer(config.model.tokenizer or path), s.prompts,
                                  "sample.prompts")
  output = require_writable("sample.output", s.output or os.path.join(config.output_dir, "samples.jsonl"))
  stages.sample_to_file(config.model, path, prompts, output, jax.random.key(config.train.seed),
                        num_samples=s.num_samples, max_new_tokens=s.max_new_tokens, temperature=s.temperature,
                        top_k=s.top_k, top_p=s.top_p, batch_size=s.batch_size,
                        max_prompt_length=config.data.max_prompt_length)
  return {"command": "sample", "prompts": len(prompts), **dropped, "output": output}


def run_label(config):
  """Labels response pairs of label.input with the oracle: {"prompt", "responses": [...]} lines (the
  `sample` command's, with "stopped") give the pairs (0, 1), (2, 3), ...; {"prompt", "response_a",
  "response_b"} one pair. Pairs with a response that did not stop or two identical responses are left out
  (stages.trainable_pairs). Writes {"prompt", "chosen", "rejected"} lines to label.output (oracle.labels: bt
  samples or argmax; seed train.seed)."""
  path = require_file("label.input", config.label.input)
  output = require_writable("label.output", config.label.output or os.path.join(config.output_dir, "labelled.jsonl"))
  rows, skipped = data.read_records(path, skip_malformed=config.data.skip_malformed)
  prompts, a, b = [], [], []
  for number, obj in rows:
    where = f"{path}:{number}"
    if "responses" in obj and isinstance(obj["responses"], list):
      responses = stages.responses(obj)
    elif "response_a" in obj and "response_b" in obj:
      responses = stages.responses({"responses": [obj["response_a"], obj["response_b"]]})
    else:
      raise ValueError(f"{where}: expected 'responses' (a list) or 'response_a' and 'response_b'")
    prompt = data.parse_prompt({"prompt": obj.get("prompt")}, where)
    if not all(isinstance(r, str) and isinstance(done, bool) for r, done in responses):
      raise ValueError(f"{where}: responses must be strings and 'stopped' booleans")
    for i in range(0, len(responses) - 1, 2):
      prompts.append(prompt)
      a.append(responses[i])
      b.append(responses[i + 1])
  prompts, a, b, dropped = stages.trainable_pairs(prompts, a, b)
  stages.label_to_file(config.oracle, prompts, a, b, output, seed=config.train.seed)
  return {"command": "label", "pairs": len(prompts), "malformed": skipped, **dropped, "output": output}


def run_evaluate(config):
  """evaluate.* on model.path against evaluate.reference (KL) and evaluate.baseline (win rate), judged
  by the oracle; writes output_dir/evaluation.{json,md} and evaluation_temperature.png."""
  e = config.evaluate
  path = require_file("model.path", config.model.path, folder=True)
  require_writable("output_dir", config.output_dir, folder=True)
  tokenizer = tok.load_tokenizer(config.model.tokenizer or path)
  prompts, _ = read_prompts(config, tokenizer, e.prompts, "evaluate.prompts")
  ood = read_prompts(config, tokenizer, e.ood_prompts, "evaluate.ood_prompts")[0] if e.ood_prompts else None
  if e.num_prompts:
    prompts, ood = prompts[:e.num_prompts], ood and ood[:e.num_prompts]
  result = stages.evaluate_folder(config, path, prompts, jax.random.key(config.train.seed),
                                  reference=e.reference or config.dpo.reference or None, baseline=e.baseline or None,
                                  ood_prompts=ood, reference_key="evaluate.reference" if e.reference else "dpo.reference")
  if distributed.is_main_process():
    evaluate.write_report({config.model.path: result}, config.output_dir)
  return result


RUNNERS = {"sft": trainers.run_sft, "reward": trainers.run_reward, "dpo": trainers.run_dpo, "sample": run_sample,
           "label": run_label, "evaluate": run_evaluate, "rso": pipelines.run_rso,
           "multistep_rso": pipelines.run_multistep_rso, "hybrid": pipelines.run_hybrid, "online": pipelines.run_online,
           "best_of_n": pipelines.run_best_of_n}


def parser():
  p = argparse.ArgumentParser(prog="python -m llm", description=__doc__.split("\n\n")[1],
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("command", nargs="?", default="builtin", choices=["builtin", *sorted(RUNNERS)])
  p.add_argument("--quick", action="store_true", help="builtin: the small variant the tests run (< 3 min)")
  p.add_argument("--out", default="results/llm", help="builtin: output folder (default results/llm)")
  p.add_argument("--seed", type=int, default=0, help="builtin: seed")
  p.add_argument("--seeds", type=int, help="builtin: replicates (default: the size's, 3; 2 with --quick)")
  p.add_argument("--config", help="YAML file (sections as in llm/training/config.py; see configs/)")
  change = p.add_mutually_exclusive_group()
  change.add_argument("--overwrite", action="store_const", const="overwrite", dest="on_change",
                      help="make again every stage that was made with other settings or inputs (on_change=overwrite)")
  change.add_argument("--resume", action="store_const", const="resume", dest="on_change",
                      help="continue an unfinished training run under changed settings (on_change=resume)")
  p.add_argument("--compile", metavar="TOPOLOGY",
                 help="sft, reward, dpo: compile the training step for a TPU slice (e.g. v5p:4x4x4) instead of "
                      "running it, and report memory per chip and the roofline; sample: the generation on one "
                      "chip of the slice (llm.training.aot; needs the tpu-compile extra); exit status 3 when it "
                      "does not fit")
  p.add_argument("overrides", nargs="*", metavar="key=value", help="e.g. train.learning_rate=1e-5 output_dir=runs/x")
  return p


def main(argv=None):
  """Runs a command; bad settings, a failed file operation, a non-finite run and Ctrl-C end in one line."""
  args = parser().parse_intermixed_args(argv)
  try:
    return run(args)
  except KeyboardInterrupt:
    print(f"python -m llm {args.command}: interrupted; rerun the same command to resume", file=sys.stderr)
    return 130
  except OSError as e:
    print(f"python -m llm {args.command}: error: {e.strerror or e} ({e.filename or 'no file name'})", file=sys.stderr)
    return 1


def run(args):
  try:
    if args.command == "builtin":
      return run_builtin(args)
    overrides = [*args.overrides, *([f"on_change={args.on_change}"] if args.on_change else [])]
    config = config_lib.load_config(args.command, args.config, overrides)
    if args.compile:
      return run_compile(config, args.command, args.compile)
    d = config.distributed
    distributed.initialize(d.coordinator_address or None, d.num_processes or None,
                           d.process_id if d.process_id >= 0 else None)
    result = RUNNERS[args.command](config)
  except ValueError as e:
    print(f"python -m llm {args.command}: error: {e}", file=sys.stderr)
    return 2
  except FloatingPointError as e:
    print(f"python -m llm {args.command}: {e}", file=sys.stderr)
    return 1
  if distributed.is_main_process():
    shown = {k: v for k, v in result.items() if k not in ("config", "manifest")}
    print(json.dumps(shown, indent=2, default=float)[:4000])
  return 0


def run_compile(config, command, topology):
  """Prints llm.training.aot's report (text, then JSON); 0 when the step fits the slice's HBM, 3 when not."""
  from llm.training import aot
  result = aot.run_compile(config, command, topology)
  print(aot.format_report(result))
  print(json.dumps(result, indent=2, default=float))
  return 0 if result["fits"] else 3


def run_builtin(args):
  from llm.builtin import run as builtin
  if args.overrides or args.on_change == "resume" or args.compile:
    raise ValueError("the built-in run takes --quick, --out, --seed, --seeds, --overwrite and --config SIZES.yaml")
  if args.seeds is not None and args.seeds < 1:
    raise ValueError(f"--seeds must be an integer >= 1, got {args.seeds}")
  sizes = builtin.load_sizes(args.config) if args.config else builtin.SIZES["quick" if args.quick else "default"]
  if args.seeds is not None:
    sizes = dataclasses.replace(sizes, seeds=args.seeds)
  builtin.run_builtin(args.out, sizes=sizes, seed=args.seed, on_change=args.on_change or "stop")
  return 0
