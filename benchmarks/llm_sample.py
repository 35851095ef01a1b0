"""Sampling throughput: generated tokens/s of llm.inference.sampling.generate (jitted prefill + KV-cache decode) and,
on CPU, of transformers' generate (KV cache on) for the same weights, prompts and lengths, side by side.

  python benchmarks/llm_sample.py [--hidden 256 --layers 4 --heads 8 --kv-heads 4 --intermediate 768
                                   --vocab 8192 --batch 8 --prompt 64 --new 128 --runs 3 --no-torch]

Greedy decoding with no stop token, so both generate exactly batch x new tokens. Prints a Markdown row.
"""

import argparse
import tempfile

import jax
import numpy as np
from llm_step import hf_llama, median_times  # benchmarks/ is the script's folder, on sys.path

from llm.inference import sampling
from llm.models import hf_io


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  for name, default in (("hidden", 256), ("layers", 4), ("heads", 8), ("kv-heads", 4), ("intermediate", 768),
                        ("vocab", 8192), ("batch", 8), ("prompt", 64), ("new", 128), ("runs", 3)):
    parser.add_argument(f"--{name}", type=int, default=default)
  parser.add_argument("--no-torch", action="store_true")
  args = parser.parse_args()
  import torch
  import transformers
  torch.manual_seed(0)
  torch_model = transformers.LlamaForCausalLM(hf_llama(args, args.prompt + args.new)).eval()
  folder = tempfile.mkdtemp()
  torch_model.save_pretrained(folder)
  model, _ = hf_io.load_hf_checkpoint(folder)
  ids = np.random.default_rng(0).integers(1, args.vocab, (args.batch, args.prompt)).astype(np.int32)
  mask = np.ones_like(ids)

  def ours():
    out = sampling.generate(model, ids, mask, jax.random.key(0), max_new_tokens=args.new, temperature=0.0)
    out.tokens.block_until_ready()

  fns = {"jax": ours}
  if not args.no_torch:
    batch, attention = torch.tensor(ids, dtype=torch.long), torch.tensor(mask, dtype=torch.long)

    def theirs():
      with torch.no_grad():
        torch_model.generate(input_ids=batch, attention_mask=attention, max_new_tokens=args.new,
                             min_new_tokens=args.new, do_sample=False, pad_token_id=0, use_cache=True)

    fns["torch"] = theirs
  times = median_times(fns, args.runs)
  seconds = times["jax"]
  tokens = args.batch * args.new
  device = jax.devices()[0]
  print(f"device: {device.device_kind}, jax {jax.__version__}")
  print("| model | batch, prompt + new | gshf-jax | tokens/s | transformers generate | tokens/s | speed-up |")
  print("| --- | --- | --- | --- | --- | --- | --- |")
  size = f"Llama E={args.hidden} L={args.layers} H={args.heads}/{args.kv_heads} V={args.vocab}"
  row = f"| {size} | {args.batch}, {args.prompt} + {args.new} | {seconds * 1e3:.0f} ms | {tokens / seconds:,.0f} |"
  if args.no_torch:
    print(row + " – | – | – |")
    return
  torch_seconds = times["torch"]
  print(row + f" {torch_seconds * 1e3:.0f} ms | {tokens / torch_seconds:,.0f} | {torch_seconds / seconds:.2f}x |")


if __name__ == "__main__":
  main()
