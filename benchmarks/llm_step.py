"""Training-step throughput of a Llama-family model: tokens/s and MFU of forward + backward + AdamW
(llm.training.step), and on CPU the same model, batch and length in transformers' PyTorch side by side.

  python benchmarks/llm_step.py [--hidden 256 --layers 4 --heads 8 --kv-heads 4 --intermediate 768
                                 --vocab 8192 --batch 8 --seq 256 --dtype float32 --runs 5 --no-torch]

MFU = model FLOPs per second / the device's peak (PEAK_FLOPS, bf16 dense); model FLOPs per token =
6 N (N = parameters without the embedding) + 12 L E T (attention scores and values, forward + backward;
PaLM, Appendix B). The two sides' runs alternate (median_times). Also prints one layer's attention,
forward + backward, through llm.models.attention.attend and through jax.nn.dot_product_attention. Prints Markdown
rows for benchmarks/RESULTS.md.
"""

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from llm.models import attention
from llm.models import config as model_config
from llm.models.transformer import init_model
from llm.training import step as train_step

PEAK_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "TPU v4": 275e12, "TPU v5 lite": 197e12,
              "TPU v5p": 459e12, "TPU v6 lite": 918e12}


def peak_flops(device):
  kind = device.device_kind
  return next((v for k, v in PEAK_FLOPS.items() if k.lower() in kind.lower()), None)


def flops_per_token(config, seq):
  embedding = config.vocab_size * config.hidden_size
  params = sum(x.size for x in jax.tree.leaves(nnx.state(nnx.eval_shape(lambda: init_model(config)), nnx.Param)))
  return 6 * (params - embedding) + 12 * config.num_layers * config.hidden_size * seq


def median_times(fns, runs):
  """{name: median seconds} of the zero-argument callables in `fns`, after one warm-up call each
  (compilation), their runs interleaved (a, b, a, b, ...) so that a noisy machine slows them alike."""
  for fn in fns.values():
    fn()
  times = {name: [] for name in fns}
  for _ in range(runs):
    for name, fn in fns.items():
      start = time.perf_counter()
      fn()
      times[name].append(time.perf_counter() - start)
  return {name: float(np.median(t)) for name, t in times.items()}


def hf_llama(args, length):
  """The transformers LlamaConfig of the size in args (hidden, layers, heads, kv_heads, intermediate, vocab)."""
  import transformers
  return transformers.LlamaConfig(vocab_size=args.vocab, hidden_size=args.hidden, intermediate_size=args.intermediate,
                                  num_hidden_layers=args.layers, num_attention_heads=args.heads,
                                  num_key_value_heads=args.kv_heads, max_position_embeddings=max(2048, length))


def jax_step(args, ids):
  """(run one training step, the model config) for gshf-jax."""
  config = model_config.from_hf(hf_llama(args, args.seq), dtype=args.dtype, param_dtype="float32", remat=args.remat)
  graphdef, params, frozen = nnx.split(init_model(config), nnx.Param, ...)
  opt_state = train_step.init_optimizer_state(params)
  step = train_step.make_train_step()
  hparams = train_step.hyperparameters(1e-4, weight_decay=1e-4)  # optax.adamw(1e-4)'s defaults
  batch = {"input_ids": jnp.asarray(ids)[None], "attention_mask": jnp.ones((1, *ids.shape), jnp.int32)}
  state = {"params": params, "opt": opt_state}

  def run():
    state["params"], state["opt"], metrics = step(graphdef, train_step.next_token_loss, state["params"], frozen,
                                                  state["opt"], batch, hparams)
    metrics["loss"].block_until_ready()

  return run, config


def torch_step(args, ids):
  """Run one training step of transformers' LlamaForCausalLM (its default attention, SDPA) with AdamW."""
  import torch
  import transformers
  torch.manual_seed(0)
  model = transformers.LlamaForCausalLM(hf_llama(args, args.seq)).train()
  opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
  batch = torch.tensor(ids, dtype=torch.long)

  def run():
    loss = model(input_ids=batch, labels=batch).loss
    loss.backward()
    opt.step()
    opt.zero_grad()

  return run


def attention_steps(args):
  """Forward + backward of one layer's attention at the benchmark's shapes: llm.models.attention.attend (on CPU:
  grouped_attention in causal blocks) and jax.nn.dot_product_attention, as callables."""
  rng = np.random.default_rng(0)
  head_dim = args.hidden // args.heads
  q, k, v = (jnp.asarray(rng.normal(size=(args.batch, args.seq, h, head_dim)), args.dtype)
             for h in (args.heads, args.kv_heads, args.kv_heads))
  mask = jnp.tril(jnp.ones((args.seq, args.seq), bool))[None, None]
  scale = head_dim ** -0.5

  def timed(fn):
    grad = jax.jit(jax.grad(lambda q, k, v: fn(q, k, v).astype(jnp.float32).sum(), argnums=(0, 1, 2)))
    return lambda: jax.block_until_ready(grad(q, k, v))

  return {"attend": timed(lambda q, k, v: attention.attend(q, k, v, mask, scale, causal=True)),
          "dot_product_attention": timed(lambda q, k, v: jax.nn.dot_product_attention(q, k, v, mask=mask,
                                                                                       scale=scale))}


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  for name, default in (("hidden", 256), ("layers", 4), ("heads", 8), ("kv-heads", 4), ("intermediate", 768),
                        ("vocab", 8192), ("batch", 8), ("seq", 256), ("runs", 5)):
    parser.add_argument(f"--{name}", type=int, default=default)
  parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
  parser.add_argument("--remat", action="store_true")
  parser.add_argument("--no-torch", action="store_true", help="skip the PyTorch side (default on CPU: run it)")
  args = parser.parse_args()
  device = jax.devices()[0]
  ids = np.random.default_rng(0).integers(0, args.vocab, (args.batch, args.seq)).astype(np.int32)
  run, config = jax_step(args, ids)
  with_torch = not args.no_torch and device.platform == "cpu"
  fns = {"jax": run, **({"torch": torch_step(args, ids)} if with_torch else {})}
  seconds = median_times(fns, args.runs)
  tokens = args.batch * args.seq
  flops = flops_per_token(config, args.seq) * tokens
  peak = peak_flops(device)
  mfu = f"{flops / seconds['jax'] / peak:.1%}" if peak else "n/a (no peak for this device)"
  print(f"device: {device.device_kind}, jax {jax.__version__}")
  print("| model | batch x seq | dtype | gshf-jax step | tokens/s | MFU | PyTorch step | speed-up |")
  print("| --- | --- | --- | --- | --- | --- | --- | --- |")
  size = f"Llama E={args.hidden} L={args.layers} H={args.heads}/{args.kv_heads} F={args.intermediate} V={args.vocab}"
  print(f"| {size} | {args.batch} x {args.seq} | {args.dtype} | {seconds['jax'] * 1e3:.1f} ms | "
        f"{tokens / seconds['jax']:,.0f} | {mfu} | " + (f"{seconds['torch'] * 1e3:.1f} ms | "
                                                        f"{seconds['torch'] / seconds['jax']:.2f}x |"
                                                        if with_torch else "– | – |"))
  attention_seconds = median_times(attention_steps(args), args.runs)
  print(f"\none layer's attention, forward + backward: llm.models.attention.attend {attention_seconds['attend'] * 1e3:.1f} ms, "
        f"jax.nn.dot_product_attention {attention_seconds['dot_product_attention'] * 1e3:.1f} ms "
        f"({attention_seconds['dot_product_attention'] / attention_seconds['attend']:.2f}x)")


if __name__ == "__main__":
  main()
