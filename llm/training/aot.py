"""Ahead-of-time compilation of a run's training step for a TPU slice, without the slice and without
allocating a parameter (MaxText's train_compile): `python -m llm dpo --config FILE --compile v5p:4x4x4`.

The step is the one `python -m llm <trainer>` would run (llm.training.step.train_step with the config's
loss, mesh, logical-axis rules, shardings, dtypes, remat, LoRA and micro-batches), lowered on abstract
arrays (jax.ShapeDtypeStruct with NamedShardings over llm.parallel.topology's compile-only devices) and
compiled by libtpu. The report, per chip: parameters, optimizer state, batch, XLA's temporaries
(activations), the total (XLA's peak memory) against the chip's HBM and whether it fits; the model flops of a step (6 N tokens
plus attention, PaLM's count), the flops remat adds, XLA's own count, and the roofline step time (the
model's flops with remat at the chip's peak, or the least HBM traffic at its bandwidth, whichever is
longer) and the MFU it implies: an upper bound, what a perfect kernel schedule would reach. Sequences are
taken at data.max_prompt_length + data.max_response_length (the longest a batch can be).

`python -m llm sample --compile TOPOLOGY` compiles the generation instead (llm.inference.sampling's prefill
and KV-cache decode loop, as `sample`, the pipelines and RSO run it: a whole model per chip, each chip
sampling its own prompts) for one chip of the slice: parameters, the KV cache and XLA's temporaries against
the chip's HBM, and the roofline times of the prefill and of one decoding step (a step reads every
parameter and the cache: memory-bound unless the batch is large).
"""

import math
import re

import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec

from llm.inference import sampling
from llm.inference.logprobs import LM_HEAD_CHUNK
from llm.models import hf_io, lora
from llm.models.transformer import Transformer
from llm.parallel import sharding, topology
from llm.training import step as train_step
from llm.training import trainers
from llm.training.config import require_file

TRAINERS = ("sft", "reward", "dpo")


def read_model_config(model_section, trainer):
  """The ModelConfig of model.path's config.json (llm.models.hf_io.read_config: no weights needed) with the
  section's dtypes, remat and layer scan; a reward model gets a scalar head."""
  path = require_file("model.path", model_section.path, folder=True)
  overrides = trainers.model_settings(model_section)
  if trainer == "reward":
    overrides["num_labels"] = 1
  return hf_io.read_config(path, **overrides)[1]


def abstract_state(config, model_section, mesh, seed=0):
  """(graphdef, params, frozen, opt_state) of the model as the trainer splits it (llm.models.lora.trainable),
  every leaf a jax.ShapeDtypeStruct carrying its NamedSharding on `mesh`; nothing is allocated."""
  def build():
    return trainers.with_adapters(Transformer(config, rngs=nnx.Rngs(0)), model_section, seed)

  model = nnx.eval_shape(build)
  trainable = lora.trainable(model)
  graphdef, params, frozen = nnx.split(model, trainable, ...)
  param_shardings, frozen_shardings = sharding.param_shardings(model, mesh).split(trainable, ...)
  placed = lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s)
  params = jax.tree.map(placed, params, param_shardings)
  frozen = jax.tree.map(placed, frozen, frozen_shardings)
  optimizer = train_step.adamw(train_step.hyperparameters(0.0))
  replicated = NamedSharding(mesh, PartitionSpec())
  # moments are placed like their parameters, step counts replicated (as init_optimizer_state does)
  opt_state = optax.tree_map_params(optimizer, placed, jax.eval_shape(optimizer.init, params), param_shardings,
                                    transform_non_params=lambda x: placed(x, replicated))
  return graphdef, params, frozen, opt_state


def abstract_batch(trainer, config, mesh):
  """The batch dict one step takes, [grad_accum, batch_size / grad_accum, ...], at the longest sequences.

  Raises:
    ValueError: a micro-batch that the mesh's batch axes (data x fsdp) do not divide.
  """
  train, d = config.train, config.data
  accum, micro = train.grad_accum, train.batch_size // train.grad_accum
  rows = math.prod(mesh.shape[a] for a in ("data", "fsdp"))
  if micro % rows:
    raise ValueError(f"train.batch_size / train.grad_accum = {micro} rows per micro-batch do not divide over the "
                     f"{rows} devices of the mesh's data x fsdp axes ({dict(mesh.shape)})")
  spec = sharding.batch_sharding(mesh, microbatched=True)
  tokens = lambda n: jax.ShapeDtypeStruct((accum, micro, n), jnp.int32, sharding=spec)
  per_row = jax.ShapeDtypeStruct((accum, micro), jnp.float32, sharding=spec)
  prompt = {"prompt_ids": tokens(d.max_prompt_length), "prompt_mask": tokens(d.max_prompt_length)}
  if trainer == "sft":
    return {**prompt, "response_ids": tokens(d.max_response_length), "response_mask": tokens(d.max_response_length),
            "token_weight": per_row}
  batch = {**prompt, **{f"{side}_{k}": tokens(d.max_response_length) for side in ("chosen", "rejected")
                        for k in ("ids", "mask")}}
  if trainer == "dpo":
    batch.update(ref_chosen=per_row, ref_rejected=per_row)
    if config.dpo.uncertainty_coef:
      batch.update(gamma_chosen=per_row, gamma_rejected=per_row)
  return batch


def loss_function(trainer, config):
  return {"sft": lambda: trainers.sft_loss, "reward": lambda: trainers.reward_model_loss,
          "dpo": lambda: trainers.make_dpo_loss(config.dpo)}[trainer]()


def per_device_bytes(tree):
  """Bytes one device holds of a tree of sharded ShapeDtypeStructs (the largest shard of each leaf)."""
  return sum(math.prod(x.sharding.shard_shape(x.shape)) * jnp.dtype(x.dtype).itemsize for x in jax.tree.leaves(tree))


def parameter_count(tree):
  return sum(math.prod(x.shape) for x in jax.tree.leaves(tree))


def model_flops(config, sequences, length):
  """Model flops of one training step (forward and backward) over `sequences` rows of `length` tokens:
  6 N per token for the matmul parameters N (every layer's projections and the LM head or score head; the
  embedding lookup does none) plus 12 L H d_head T per token for attention scores and values over a full
  T x T square (PaLM, Appendix B). Returns (total, the forward pass of the layers alone: what per-layer
  remat computes again)."""
  embed = config.hidden_size
  head = embed * (config.num_labels or config.vocab_size)
  per_layer = layer_matmul_params(config)
  tokens = sequences * length
  attention = 12 * config.num_layers * config.num_heads * config.head_dim * length * tokens
  total = 6 * (config.num_layers * per_layer + head) * tokens + attention
  layers_forward = 2 * config.num_layers * per_layer * tokens + attention / 3
  return total, layers_forward


def layer_matmul_params(config):
  """Parameters of one block's matmuls: q, k, v, o and the MLP (gated: three matrices; GPT-2: two)."""
  e, h, kv, d, m = config.hidden_size, config.num_heads, config.num_kv_heads, config.head_dim, config.intermediate_size
  mlp = (2 if config.model_type == "gpt2" else 3) * e * m
  return e * d * (h + 2 * kv) + h * d * e + mlp


def roofline(flops, bytes_accessed, chip):
  """The roofline time of a step on one chip: max(flops / peak, bytes / HBM bandwidth), seconds."""
  return max(flops / chip.peak_flops, bytes_accessed / chip.hbm_bandwidth)


def lower_train_step(config, trainer, devices):
  """(lowered, parts) of `trainer`'s step for `config` on `devices` (compile-only or real); parts holds the
  model config, mesh and abstract params, frozen, opt_state and batch."""
  model = read_model_config(config.model, trainer)
  mesh = sharding.make_mesh(config.train.mesh, devices)
  graphdef, params, frozen, opt_state = abstract_state(model, config.model, mesh, config.train.seed)
  batch = abstract_batch(trainer, config, mesh)
  step = train_step.make_train_step(
      param_shardings=jax.tree.map(lambda x: x.sharding, params),
      frozen_shardings=jax.tree.map(lambda x: x.sharding, frozen),
      opt_shardings=jax.tree.map(lambda x: x.sharding, opt_state), batch_shardings=sharding.batch_sharding(
          mesh, microbatched=True))
  hparams = train_step.hyperparameters(config.train.learning_rate, weight_decay=config.train.weight_decay,
                                       max_grad_norm=config.train.max_grad_norm)
  # traced on the mesh as loop.train traces it; 32-bit defaults, as a training run has them (Mosaic
  # kernels do not lower under jax_enable_x64, which the test suite turns on)
  with jax.enable_x64(False):
    lowered = sharding.traced_on(mesh, step.lower)(graphdef, loss_function(trainer, config), params, frozen,
                                                   opt_state, batch, hparams)
  return lowered, {"model": model, "mesh": mesh, "params": params, "frozen": frozen, "opt_state": opt_state,
                   "batch": batch}


def compile_train_step(config, trainer, devices):
  """(compiled, parts) of lower_train_step."""
  lowered, parts = lower_train_step(config, trainer, devices)
  return lowered.compile(), parts


def state_bytes(parts, chip):
  """Bytes per chip of the parameters, optimizer state and batch (from their shardings alone) and the HBM."""
  return {"parameters": per_device_bytes((parts["params"], parts["frozen"])),
          "optimizer_state": per_device_bytes(parts["opt_state"]), "batch": per_device_bytes(parts["batch"]),
          "hbm": chip.hbm_bytes}


def describe(parts, trainer):
  """What was compiled: the trainer, the chips, the mesh and the model's parameter count."""
  return {"trainer": trainer, "chips": parts["mesh"].devices.size, "mesh": dict(parts["mesh"].shape),
          "parameters": parameter_count(parts["params"]) + parameter_count(parts["frozen"])}


def peak_bytes(memory):
  """What a compiled program holds at its peak, per device: XLA's peak_memory_in_bytes (the heap peak of its
  buffer assignment; on TPU it counts buffers that temp_size_in_bytes leaves out, such as a while loop's
  carried KV cache), and at least arguments + outputs - aliased + temporaries."""
  held = (memory.argument_size_in_bytes + memory.output_size_in_bytes - memory.alias_size_in_bytes
          + memory.temp_size_in_bytes)
  return max(getattr(memory, "peak_memory_in_bytes", 0), held)


def report(compiled, parts, config, trainer, chip):
  """The fit and roofline of a compiled step (compile_train_step) on chips of `chip` (topology.Chip)."""
  model = parts["model"]
  memory = compiled.memory_analysis()
  chips = parts["mesh"].devices.size
  total = peak_bytes(memory)
  length = config.data.max_prompt_length + config.data.max_response_length
  sequences = config.train.batch_size * (1 if trainer == "sft" else 2)  # a pair scores both responses
  flops, recomputed = model_flops(model, sequences, length)
  hardware = flops + (recomputed if model.remat else 0)
  cost = compiled.cost_analysis()
  accum = config.train.grad_accum
  # XLA counts a loop body once: the micro-batch scan (so x grad_accum), the LM head's chunk loop
  # (llm.inference.logprobs: sequences longer than LM_HEAD_CHUNK positions count one chunk) and the scan
  # over scanned layers (one layer counted)
  xla_flops, xla_bytes = cost.get("flops", 0.0) * accum, cost.get("bytes accessed", 0.0) * accum
  # HBM traffic at least: every argument read, every output written, every temporary written and read once
  # (XLA's "bytes accessed" sums the operands of every op and overstates it several times over)
  least_bytes = memory.argument_size_in_bytes + memory.output_size_in_bytes + 2 * memory.temp_size_in_bytes
  seconds = roofline(hardware / chips, least_bytes, chip)
  out = {
      **describe(parts, trainer), "trained_parameters": parameter_count(parts["params"]),
      "batch": {"sequences_per_step": sequences, "tokens_per_sequence": length, "grad_accum": accum},
      "bytes_per_chip": {**state_bytes(parts, chip), "arguments": memory.argument_size_in_bytes,
                         "outputs": memory.output_size_in_bytes, "aliased": memory.alias_size_in_bytes,
                         "temporaries": memory.temp_size_in_bytes, "total": total},
      "fits": total <= chip.hbm_bytes,
      "flops_per_step": {"model": flops, "with_remat": hardware, "xla_per_chip_x_chips": xla_flops * chips,
                         "xla_counts_one_lm_head_chunk": length - 1 > LM_HEAD_CHUNK,
                         "xla_counts_one_layer": model.scan_layers},
      "bytes_accessed_per_chip": {"at_least": least_bytes, "xla": xla_bytes},
      "roofline": {"step_seconds": seconds,
                   "compute_bound": seconds == hardware / chips / chip.peak_flops,
                   "mfu": flops / (chips * chip.peak_flops * seconds)},
  }
  if not out["fits"]:
    b, gib = out["bytes_per_chip"], topology.GIB
    out["advice"] = (f"does not fit: {b['total'] / gib:.1f} GiB per chip of {b['hbm'] / gib:.1f} GiB "
                     f"({(b['total'] - b['hbm']) / gib:.1f} GiB over); try " + knobs(b, b["temporaries"], model.remat))
  return out


def knobs(b, temporaries, remat):
  """The settings that shrink what a step holds per chip, with the sizes they act on."""
  gib = topology.GIB
  state = b["parameters"] + b["optimizer_state"]
  found = [f"a larger train.mesh fsdp axis (parameters and optimizer state: {state / gib:.1f} GiB per chip)",
           f"a larger train.grad_accum (temporaries, mostly activations: {temporaries / gib:.1f} GiB)"]
  if not remat:
    found.append("model.remat=true (keeps one activation per layer instead of all)")
  return "; ".join(found)


def refused(error, parts, config, trainer, chip):
  """The report of a step the compiler refused for want of HBM (its RESOURCE_EXHAUSTED message names what the
  temporaries need and what the chip has; both in the compiler's G)."""
  line, need, temporaries = compiler_refusal(error)
  b = state_bytes(parts, chip)
  return {**describe(parts, trainer), "bytes_per_chip": b, "fits": False, "compiler": line,
          "advice": f"does not fit: {need}; try " + knobs(b, temporaries, config.model.remat)}


def compiler_refusal(error):
  """(the RESOURCE_EXHAUSTED line of a compile error, what it says is needed, the temporaries' bytes)."""
  line = next(line for line in str(error).splitlines() if "RESOURCE_EXHAUSTED" in line).strip()
  sizes = [float(x) for x in re.findall(r"\(([\d.]+)G\)", line)]
  temporaries = sizes[0] * topology.GIB if sizes else 0.0
  need = f"the compiler needs {sizes[0]:.1f} G per chip for temporaries alone, of {sizes[1]:.1f} G" if len(sizes) == 2 \
      else line.split("RESOURCE_EXHAUSTED: ")[-1]
  return line, need, temporaries


def run_compile(config, trainer, topology_name):
  """Compiles `trainer`'s step of `config` for the TPU slice `topology_name` and returns report(...) with
  the slice's name and device kind."""
  if trainer not in (*TRAINERS, "sample"):
    raise ValueError(f"--compile compiles a training step or the sampler: the command must be one of "
                     f"{', '.join(TRAINERS)}, sample, got {trainer}")
  devices = topology.compile_only_devices(topology_name)
  chip = topology.device_spec(devices[0])
  where = {"topology": topology_name, "device_kind": devices[0].device_kind}
  if trainer == "sample":
    lowered, parts = lower_sampler(config, devices[0])
    fitted = lambda compiled: sampler_report(compiled, parts, chip)
    not_fitted = lambda error: sampler_report(None, parts, chip, refusal=compiler_refusal(error))
  else:
    lowered, parts = lower_train_step(config, trainer, devices)
    fitted = lambda compiled: report(compiled, parts, config, trainer, chip)
    not_fitted = lambda error: refused(error, parts, config, trainer, chip)
  try:
    compiled = lowered.compile()
  except jax.errors.JaxRuntimeError as e:
    if "RESOURCE_EXHAUSTED" not in str(e):
      raise
    return {**where, **not_fitted(e)}
  return {**where, **fitted(compiled)}


def lower_sampler(config, device):
  """(lowered, parts) of the generation `sample` runs (llm.inference.sampling's jitted prefill + decode) on
  one `device`: sample.batch_size prompts of data.max_prompt_length tokens (rounded up as sample_texts pads
  them), sample.num_samples continuations each, sample.max_new_tokens new tokens; parts holds the model
  config, the abstract state and the shapes."""
  model = read_model_config(config.model, "sample")
  one = NamedSharding(sharding.make_mesh({"data": 1}, [device]), PartitionSpec())
  placed = lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=one)
  graphdef, state = nnx.split(nnx.eval_shape(lambda: Transformer(model, rngs=nnx.Rngs(0))))
  state = jax.tree.map(placed, state)
  s = config.sample
  prompt = -(-config.data.max_prompt_length // sampling.PROMPT_MULTIPLE) * sampling.PROMPT_MULTIPLE
  ids, mask = (placed(jax.ShapeDtypeStruct((s.batch_size, prompt), dtype)) for dtype in (jnp.int32, jnp.bool_))
  key, scalar = placed(jax.eval_shape(lambda: jax.random.key(0))), placed(jax.ShapeDtypeStruct((), jnp.float32))
  eos = model.eos_token_id
  lowered = sampling.generate_jitted.lower(
      graphdef, state, ids, mask, key, scalar, scalar, max_new_tokens=s.max_new_tokens, greedy=s.temperature == 0,
      top_k=s.top_k, nucleus=s.top_p < 1.0, stop_tokens=eos if isinstance(eos, tuple) else (eos or 0,),
      num_samples=s.num_samples, pad_id=0)
  return lowered, {"model": model, "state": state, "rows": s.batch_size * s.num_samples, "prompt": prompt,
                   "new_tokens": s.max_new_tokens}


def sampler_report(compiled, parts, chip, refusal=None):
  """The fit and roofline of a compiled sampler (lower_sampler) on one chip of `chip` (topology.Chip); or,
  with `refusal` (compiler_refusal of a compile that ran out of HBM), what the compiler said instead of
  the memory analysis."""
  model, rows, prompt, new = parts["model"], parts["rows"], parts["prompt"], parts["new_tokens"]
  params = per_device_bytes(parts["state"])
  cache = (2 * model.num_layers * rows * (prompt + new) * model.num_kv_heads * model.head_dim
           * jnp.dtype(model.compute_dtype).itemsize)
  gib = topology.GIB
  knobs = f"try a smaller sample.batch_size or sample.num_samples (KV cache: {cache / gib:.1f} GiB)"
  if model.param_dtype != "bfloat16":
    knobs += f" or model.param_dtype=bfloat16 (parameters: {params / gib:.1f} GiB)"
  if model.scan_layers:
    knobs += " or model.scan_layers=false (scanned layers decode with more temporaries)"
  described = {"trainer": "sample", "chips": 1, "mesh": {}, "parameters": parameter_count(parts["state"]),
               "batch": {"rows": rows, "prompt_tokens": prompt, "new_tokens": new}}
  if refusal is not None:
    line, need, _ = refusal
    return {**described, "bytes_per_chip": {"parameters": params, "kv_cache": cache, "hbm": chip.hbm_bytes},
            "fits": False, "compiler": line, "advice": f"does not fit: {need}; {knobs}"}
  memory = compiled.memory_analysis()
  total = peak_bytes(memory)
  matmul = model.num_layers * layer_matmul_params(model) + model.hidden_size * model.vocab_size
  attention = 4 * model.num_layers * model.num_heads * model.head_dim  # per token and key: scores and values
  prefill = roofline(2 * matmul * rows * prompt + attention * rows * prompt * prompt / 2, params + cache, chip)
  step_flops, step_bytes = 2 * matmul * rows + attention * rows * (prompt + new), params + cache
  step = roofline(step_flops, step_bytes, chip)
  out = {**described,
         "bytes_per_chip": {"parameters": params, "kv_cache": cache, "arguments": memory.argument_size_in_bytes,
                            "outputs": memory.output_size_in_bytes, "temporaries": memory.temp_size_in_bytes,
                            "total": total, "hbm": chip.hbm_bytes},
         "fits": total <= chip.hbm_bytes,
         "roofline": {"prefill_seconds": prefill, "decode_step_seconds": step,
                      "decode_tokens_per_second": rows / step,
                      "decode_memory_bound": step == step_bytes / chip.hbm_bandwidth}}
  if not out["fits"]:
    out["advice"] = f"does not fit: {total / gib:.1f} GiB on one chip of {chip.hbm_bytes / gib:.1f} GiB; {knobs}"
  return out


def format_sampler_report(result):
  """format_report of a sampler's result (sampler_report)."""
  b, gib = result["bytes_per_chip"], topology.GIB
  batch = result["batch"]
  lines = [f"sample on one chip of {result['topology']} ({result['device_kind']}): {result['parameters'] / 1e9:.2f} "
           f"B parameters, {batch['rows']} rows x ({batch['prompt_tokens']} + {batch['new_tokens']}) tokens"]
  if "compiler" in result:
    return "\n".join([*lines, f"parameters {b['parameters'] / gib:.2f} GiB, KV cache {b['kv_cache'] / gib:.2f} GiB; "
                              f"the compiler: {result['compiler']}", result["advice"]])
  r = result["roofline"]
  lines += [f"parameters {b['parameters'] / gib:.2f} GiB, KV cache {b['kv_cache'] / gib:.2f} GiB, temporaries "
           f"{b['temporaries'] / gib:.2f} GiB; total {b['total'] / gib:.2f} of {b['hbm'] / gib:.1f} GiB: "
           f"{'fits' if result['fits'] else 'DOES NOT FIT'}",
           f"roofline: prefill {r['prefill_seconds'] * 1e3:.1f} ms, a decoding step {r['decode_step_seconds'] * 1e3:.2f} "
           f"ms ({'memory' if r['decode_memory_bound'] else 'compute'} bound), at most "
           f"{r['decode_tokens_per_second']:.0f} tokens/s"]
  return "\n".join(lines + ([result["advice"]] if "advice" in result else []))


def format_report(result):
  """A short human-readable summary of run_compile's result."""
  if result["trainer"] == "sample":
    return format_sampler_report(result)
  b, gib = result["bytes_per_chip"], topology.GIB
  lines = [f"{result['trainer']} step on {result['topology']} ({result['chips']} x {result['device_kind']}, mesh "
           f"{result['mesh']}): {result['parameters'] / 1e9:.2f} B parameters"]
  state = f"per chip: parameters {b['parameters'] / gib:.2f} GiB, optimizer state {b['optimizer_state'] / gib:.2f} GiB"
  if "compiler" in result:  # refused by the compiler: no memory analysis, no flops
    return "\n".join([*lines, f"{state}; the compiler: {result['compiler']}", result["advice"]])
  f, r = result["flops_per_step"], result["roofline"]
  lines += [f"{state}, temporaries {b['temporaries'] / gib:.2f} GiB; total {b['total'] / gib:.2f} of "
           f"{b['hbm'] / gib:.1f} GiB: {'fits' if result['fits'] else 'DOES NOT FIT'}",
           f"flops per step: model {f['model']:.3e}, with remat {f['with_remat']:.3e}, XLA {f['xla_per_chip_x_chips']:.3e}"
           + "".join(f" ({what} counted)" for what, once in (("one LM-head chunk", f["xla_counts_one_lm_head_chunk"]),
                                                             ("one layer", f["xla_counts_one_layer"])) if once),
           f"roofline: {r['step_seconds'] * 1e3:.1f} ms per step ({'compute' if r['compute_bound'] else 'memory'} "
           f"bound), MFU at most {r['mfu']:.1%}"]
  if "advice" in result:
    lines.append(result["advice"])
  return "\n".join(lines)
