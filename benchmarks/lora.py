"""Memory and step time of LoRA against full training: one training step (forward + backward + AdamW,
llm.training.step) of the same Llama-family model and batch, every parameter trained, and rank-r adapters
on the targets (llm.models.lora) with the base frozen.

  python benchmarks/lora.py [--hidden 512 --layers 8 --heads 8 --kv-heads 4 --intermediate 1536 --vocab 8192
                             --batch 8 --seq 256 --rank 16 --targets q_proj,v_proj --runs 5]

Reported per side: trained parameters, optimizer-state bytes, the compiled step's memory (XLA's
memory_analysis: arguments, outputs, temporaries) and the median step time, the two sides' runs interleaved
(llm_step.median_times). Prints Markdown rows for benchmarks/RESULTS.md.
"""

import argparse

import jax
import numpy as np
from flax import nnx
from llm_step import hf_llama, median_times

from llm.models import config as model_config
from llm.models import lora
from llm.models.transformer import init_model
from llm.training import step as train_step


def nbytes(tree):
  return sum(x.nbytes for x in jax.tree.leaves(tree))


def side(config, ids, adapters):
  """(run one step, {trained, optimizer bytes, compiled memory}) of full training or LoRA (`adapters`: None
  or (rank, targets))."""
  model = init_model(config)
  if adapters:
    rank, targets = adapters
    lora.add_adapters(model, rank, 2.0 * rank, targets)
  graphdef, params, frozen = nnx.split(model, lora.trainable(model), ...)
  opt_state = train_step.init_optimizer_state(params)
  step = train_step.make_train_step()
  hparams = train_step.hyperparameters(1e-4, weight_decay=1e-4)  # optax.adamw(1e-4)'s defaults
  batch = {"input_ids": ids[None], "attention_mask": np.ones((1, *ids.shape), np.int32)}
  memory = step.lower(graphdef, train_step.next_token_loss, params, frozen, opt_state, batch, hparams).compile().memory_analysis()
  info = {"trained": sum(x.size for x in jax.tree.leaves(params)), "optimizer": nbytes(opt_state),
          "arguments": memory.argument_size_in_bytes, "temporaries": memory.temp_size_in_bytes}
  state = {"params": params, "opt": opt_state}

  def run():
    state["params"], state["opt"], metrics = step(graphdef, train_step.next_token_loss, state["params"], frozen,
                                                  state["opt"], batch, hparams)
    metrics["loss"].block_until_ready()

  return run, info


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  for name, default in (("hidden", 512), ("layers", 8), ("heads", 8), ("kv-heads", 4), ("intermediate", 1536),
                        ("vocab", 8192), ("batch", 8), ("seq", 256), ("rank", 16), ("runs", 5)):
    parser.add_argument(f"--{name}", type=int, default=default)
  parser.add_argument("--targets", default="q_proj,v_proj")
  args = parser.parse_args()
  args.dtype, args.remat = "float32", False
  config = model_config.from_hf(hf_llama(args, args.seq), dtype="float32")
  ids = np.random.default_rng(0).integers(0, args.vocab, (args.batch, args.seq)).astype(np.int32)
  full_run, full = side(config, ids, None)
  lora_run, low = side(config, ids, (args.rank, tuple(args.targets.split(","))))
  seconds = median_times({"full": full_run, "lora": lora_run}, args.runs)
  mib = lambda b: f"{b / 2**20:,.1f} MiB"
  print(f"device: {jax.devices()[0].device_kind}, jax {jax.__version__}")
  print(f"Llama E={args.hidden} L={args.layers} H={args.heads}/{args.kv_heads} F={args.intermediate} V={args.vocab}, "
        f"batch {args.batch} x {args.seq}, float32; LoRA r={args.rank} on {args.targets}\n")
  print("| training | trained params | optimizer state | step arguments | step temporaries | step time |")
  print("| --- | --- | --- | --- | --- | --- |")
  for name, info in (("full", full), ("lora", low)):
    print(f"| {name} | {info['trained']:,} | {mib(info['optimizer'])} | {mib(info['arguments'])} | "
          f"{mib(info['temporaries'])} | {seconds[name] * 1e3:.1f} ms |")
  print(f"\nLoRA / full: optimizer state {low['optimizer'] / full['optimizer']:.4f}, arguments "
        f"{low['arguments'] / full['arguments']:.2f}, temporaries {low['temporaries'] / full['temporaries']:.2f}, "
        f"step time {seconds['lora'] / seconds['full']:.2f}")


if __name__ == "__main__":
  main()
