"""A full DPO training step against TRL's DPOTrainer, side by side on the same model, batch and lengths: the
policy's forward and backward on the chosen and the rejected responses, the reference log-probs cached (TRL:
precompute_ref_log_probs=True, read from the batch), the sigmoid loss at beta = 0.1, and an AdamW update.

  python benchmarks/dpo_peer.py [--hidden 256 --layers 4 --heads 8 --kv-heads 4 --intermediate 768
                                 --vocab 8192 --pairs 4 --prompt 128 --response 128 --runs 5]

gshf-jax: llm.training.step.train_step with llm.training.trainers.DPOLoss. TRL 1.16: DPOTrainer.compute_loss
on a batch in its collator's layout (prompt + response rows, chosen rows then rejected rows, a completion mask,
ref_chosen_logps / ref_rejected_logps), then backward and torch.optim.AdamW. Both in float32 on the CPU,
every token real (no padding), runs alternating (llm_step.median_times). Prints a Markdown row.
"""

import argparse
import os
import sys
import tempfile

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from llm_step import hf_llama, median_times  # noqa: E402

from llm.models import hf_io  # noqa: E402
from llm.training import step as train_step  # noqa: E402
from llm.training import trainers  # noqa: E402
from llm.training.config import DPOSection  # noqa: E402

LEARNING_RATE = 1e-4


def random_pairs(args):
  """Prompt, chosen and rejected token ids [pairs, length] and cached reference log-probs [pairs]."""
  rng = np.random.default_rng(0)
  ids = lambda n: rng.integers(3, args.vocab, (args.pairs, n)).astype(np.int32)
  return ids(args.prompt), ids(args.response), ids(args.response), rng.normal(-300, 5, (2, args.pairs))


def jax_step(folder, pairs):
  """Run one DPO step of gshf-jax (float32 parameters and compute) from the checkpoint in `folder`."""
  prompt, chosen, rejected, ref = pairs
  model, _ = hf_io.load_hf_checkpoint(folder, "float32")
  graphdef, params, frozen = nnx.split(model, nnx.Param, ...)
  opt_state = train_step.init_optimizer_state(params)
  step = train_step.make_train_step()
  hparams = train_step.hyperparameters(LEARNING_RATE, weight_decay=0.01, max_grad_norm=0.0)  # torch AdamW defaults
  ones = lambda x: jnp.ones(x.shape, jnp.int32)[None]
  batch = {"prompt_ids": jnp.asarray(prompt)[None], "prompt_mask": ones(prompt), "chosen_ids": jnp.asarray(chosen)[None],
           "chosen_mask": ones(chosen), "rejected_ids": jnp.asarray(rejected)[None], "rejected_mask": ones(rejected),
           "ref_chosen": jnp.asarray(ref[0], jnp.float32)[None], "ref_rejected": jnp.asarray(ref[1], jnp.float32)[None]}
  loss = trainers.make_dpo_loss(DPOSection(beta=0.1))
  state = {"params": params, "opt": opt_state}

  def run():
    state["params"], state["opt"], metrics = step(graphdef, loss, state["params"], frozen, state["opt"], batch, hparams)
    return float(metrics["loss"])

  return run


def trl_step(model, pairs):
  """Run one DPO step of TRL's DPOTrainer (its compute_loss, then backward and AdamW) on `model`."""
  import datasets
  import torch
  from trl import DPOConfig, DPOTrainer

  from llm.inference import tokenizer as tok
  prompt, chosen, rejected, ref = pairs
  tokenizer = tok.train_tokenizer(["a b c d e f g h"] * 8, vocab_size=300)  # only for the trainer's construction
  rows = datasets.Dataset.from_list([{"prompt": "a", "chosen": " b", "rejected": " c"}] * 4)
  # precompute mode: the reference log-probs come with the batch (and no reference copy of the model is kept)
  config = DPOConfig(output_dir=tempfile.mkdtemp(), beta=0.1, report_to=[], use_cpu=True, precompute_ref_log_probs=True,
                     per_device_train_batch_size=len(prompt), bf16=False)
  trainer = DPOTrainer(model=model, args=config, train_dataset=rows, processing_class=tokenizer)
  both = lambda response: np.concatenate([prompt, response], 1)
  input_ids = torch.tensor(np.concatenate([both(chosen), both(rejected)]), dtype=torch.long)
  completion = np.concatenate([np.zeros_like(prompt), np.ones_like(chosen)], 1)
  inputs = {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids),
            "completion_mask": torch.tensor(np.concatenate([completion, completion])),
            "ref_chosen_logps": torch.tensor(ref[0], dtype=torch.float32),
            "ref_rejected_logps": torch.tensor(ref[1], dtype=torch.float32)}
  optimizer = torch.optim.AdamW(model.parameters(), lr=LEARNING_RATE)

  def run():
    loss = trainer.compute_loss(model, inputs)
    loss.backward()
    optimizer.step()
    optimizer.zero_grad()
    return float(loss.detach())

  return run


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  for name, default in (("hidden", 256), ("layers", 4), ("heads", 8), ("kv-heads", 4), ("intermediate", 768),
                        ("vocab", 8192), ("pairs", 4), ("prompt", 128), ("response", 128), ("runs", 5)):
    parser.add_argument(f"--{name}", type=int, default=default)
  args = parser.parse_args()
  args.seq = args.prompt + args.response
  pairs = random_pairs(args)
  import torch
  import transformers
  torch.manual_seed(0)
  folder = tempfile.mkdtemp()
  transformers.LlamaForCausalLM(hf_llama(args, args.seq)).save_pretrained(folder)  # both sides start from these
  model = transformers.LlamaForCausalLM.from_pretrained(folder).train()
  fns = {"jax": jax_step(folder, pairs), "trl": trl_step(model, pairs)}
  first = {name: fn() for name, fn in fns.items()}  # the same weights and batch: the same first loss
  if abs(first["jax"] - first["trl"]) > 1e-3 * max(1.0, abs(first["trl"])):
    raise SystemExit(f"the two sides disagree on the first step's loss: {first}")
  seconds = median_times(fns, args.runs)
  print(f"device: {jax.devices()[0].device_kind}, jax {jax.__version__}, torch {torch.__version__}; "
        f"first-step loss {first['jax']:.6f} (gshf-jax) / {first['trl']:.6f} (TRL)")
  print("| model | pairs x (prompt + response) | gshf-jax step | TRL DPOTrainer step | speed-up |")
  print("| --- | --- | --- | --- | --- |")
  print(f"| Llama E={args.hidden} L={args.layers} H={args.heads}/{args.kv_heads} F={args.intermediate} V={args.vocab}, "
        f"float32 | {args.pairs} x ({args.prompt} + {args.response}) | {seconds['jax'] * 1e3:.0f} ms | "
        f"{seconds['trl'] * 1e3:.0f} ms | **{seconds['trl'] / seconds['jax']:.2f}x** |")


if __name__ == "__main__":
  main()
