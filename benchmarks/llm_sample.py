"""Sampling throughput: generated tokens/s of llm.inference.sampling.generate (jitted prefill + KV-cache decode) and,
on CPU, of transformers' generate (KV cache on) for the same weights, prompts and lengths, side by side.

  python benchmarks/llm_sample.py [--hidden 256 --layers 4 --heads 8 --kv-heads 4 --intermediate 768
                                   --vocab 8192 --batch 8 --prompt 64 --new 128 --runs 3 --no-torch]

Greedy decoding with no stop token, so both generate exactly batch x new tokens. With --stops, the rows end at
different lengths: a first greedy run's outputs give each row a stop token of its own (one no other row writes),
the one it first writes nearest (i + 1) * new / batch tokens in (early exit: both sides stop decoding when every
row has stopped); tokens/s then counts each row's tokens up to its stop.
Prints a Markdown row.
"""

import argparse
import tempfile

import jax
import numpy as np
from llm_step import hf_llama, median_times  # benchmarks/ is the script's folder, on sys.path

from llm.inference import sampling
from llm.models import hf_io


def varied_stops(free, new):
  """A stop token per row of the greedy outputs `free` [batch, new]: one that no other row writes, first written
  by row i nearest (i + 1) * new / batch tokens in (rows with no such token get none and run to the end)."""
  stops = []
  for i, row in enumerate(free.tolist()):
    others = set(np.delete(free, i, axis=0).ravel().tolist())
    first = {}
    for position, token in enumerate(row):
      first.setdefault(token, position)
    target = (i + 1) * new // len(free)
    candidates = [(abs(position + 1 - target), token) for token, position in first.items() if token not in others]
    if candidates:
      stops.append(min(candidates)[1])
  return tuple(stops)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  for name, default in (("hidden", 256), ("layers", 4), ("heads", 8), ("kv-heads", 4), ("intermediate", 768),
                        ("vocab", 8192), ("batch", 8), ("prompt", 64), ("new", 128), ("runs", 3)):
    parser.add_argument(f"--{name}", type=int, default=default)
  parser.add_argument("--no-torch", action="store_true")
  parser.add_argument("--stops", action="store_true", help="rows stop at different lengths (see above)")
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

  stops = ()
  if args.stops:
    free = np.asarray(sampling.generate(model, ids, mask, jax.random.key(0), max_new_tokens=args.new,
                                        temperature=0.0).tokens)
    stops = varied_stops(free, args.new)
  lengths = {}

  def ours():
    out = sampling.generate(model, ids, mask, jax.random.key(0), max_new_tokens=args.new, temperature=0.0,
                            stop_tokens=stops)
    lengths["jax"] = np.asarray(out.mask).sum(1)

  fns = {"jax": ours}
  if not args.no_torch:
    batch, attention = torch.tensor(ids, dtype=torch.long), torch.tensor(mask, dtype=torch.long)

    def theirs():
      with torch.no_grad():
        out = torch_model.generate(input_ids=batch, attention_mask=attention, max_new_tokens=args.new,
                                   min_new_tokens=0 if stops else args.new, do_sample=False, pad_token_id=0,
                                   eos_token_id=list(stops) or None, use_cache=True)
      generated = out[:, args.prompt:].numpy()
      ended = np.isin(generated, stops).cumsum(1) - np.isin(generated, stops)  # stops before each position
      lengths["torch"] = (ended == 0).sum(1) if stops else np.full(args.batch, args.new)

    fns["torch"] = theirs
  times = median_times(fns, args.runs)
  seconds = times["jax"]
  tokens = int(lengths["jax"].sum())
  device = jax.devices()[0]
  print(f"device: {device.device_kind}, jax {jax.__version__}; tokens per row {lengths['jax'].tolist()}"
        + (f" (transformers: {lengths['torch'].tolist()})" if "torch" in lengths else ""))
  print("| model | batch, prompt + new | gshf-jax | tokens/s | transformers generate | tokens/s | speed-up |")
  print("| --- | --- | --- | --- | --- | --- | --- |")
  size = f"Llama E={args.hidden} L={args.layers} H={args.heads}/{args.kv_heads} V={args.vocab}"
  new = f"up to {args.new}, stops" if stops else str(args.new)
  row = f"| {size} | {args.batch}, {args.prompt} + {new} | {seconds * 1e3:.0f} ms | {tokens / seconds:,.0f} |"
  if args.no_torch:
    print(row + " – | – | – |")
    return
  torch_seconds = times["torch"]
  torch_tokens = int(lengths["torch"].sum())
  print(row + f" {torch_seconds * 1e3:.0f} ms | {torch_tokens / torch_seconds:,.0f} | {torch_seconds / seconds:.2f}x |")


if __name__ == "__main__":
  main()
