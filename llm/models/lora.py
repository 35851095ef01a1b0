"""Low-rank adapters (LoRA, Hu et al. 2021) on a Transformer's projections, as PEFT applies them: each
targeted Linear computes x W + b + (alpha / r) (x A) B with A [in, r] and B [r, out] new, B zero, so an
adapted model starts equal to its base (rsLoRA: alpha / sqrt(r)).

Targets are Hugging Face module names matched like PEFT's `target_modules`: a target matches a module whose
name is the target or ends with "." + target ("q_proj" matches every layer's self_attn.q_proj; GPT-2's
"c_proj" both attn.c_proj and mlp.c_proj); "all-linear" matches every projection of the blocks (PEFT's
"all-linear": all linear layers but the output head). No targets: PEFT's default for the family
(`<family>/hf.py` LORA_TARGETS). Adapters are float32 whatever the base's dtype (as PEFT keeps them), and
have no dropout.

Training with adapters updates the adapters only (and a sequence-classification head, which PEFT also
trains: its modules_to_save); `trainable` is the nnx filter. llm.models.hf_io writes the merged weights
(save_hf_checkpoint) and the PEFT adapter folder (save_peft_adapter).
"""

import functools
import math

import jax
import jax.numpy as jnp
from flax import nnx

from llm.models.layers import Linear, annotated
from llm.models.transformer import layer_path, stacked

ALL_LINEAR = "all-linear"  # PEFT's target for every linear layer but the output head


def adapter_scale(rank, alpha, rslora=False):
  """LoRA's scale of (x A) B: alpha / r, or rsLoRA's alpha / sqrt(r)."""
  return alpha / (math.sqrt(rank) if rslora else rank)


def projections(model):
  """{HF module name: (our Linear, layer)} for every projection of the model's blocks (the family's tensor
  table, its [out, in] / [in, out] kernels). `layer` is None, or with scanned layers (config.scan_layers)
  the index into the stacked Linear that all layers share."""
  modules = dict(nnx.iter_modules(model))
  found = {}
  for name, (path, _) in model.config.family.param_table(model.config).items():
    path, layer = layer_path(model.config, path)
    module = modules.get(path[:-1])
    if path[-1] == "kernel" and isinstance(module, Linear):
      found[name.removesuffix(".weight")] = module, layer
  return found


def matches(name, target):
  """PEFT's target_modules rule for a string target: the module name is the target or ends with ".target"
  (every projection for "all-linear")."""
  return target == ALL_LINEAR or name == target or name.endswith("." + target)


def add_adapters(model, rank, alpha, targets=(), *, rslora=False, seed=0):
  """Attaches a rank-`rank` adapter to every projection of `model` that a target matches, in place; returns
  the model. A is he-uniform from `seed`, B zero; both carry A's / B's logical axis names from the kernel
  (input axis, None) and (None, output axis), so they shard with it.

  Raises:
    ValueError: a rank below 1, or a target that matches no projection (the message lists them).
  """
  if rank < 1:
    raise ValueError(f"model.lora_rank must be >= 1 to add adapters, got {rank}")
  targets = tuple(targets) or model.config.family.LORA_TARGETS
  found = projections(model)
  for target in targets:
    if not any(matches(name, target) for name in found):
      suffixes = sorted({name.rsplit(".", 1)[-1] for name in found})
      raise ValueError(f"model.lora_targets: {target!r} matches no projection of {model.config.model_type} "
                       f"(its projections: {suffixes})")
  rngs = nnx.Rngs(seed)
  scale = adapter_scale(rank, alpha, rslora)
  for name, (module, layer) in found.items():
    if module.adapter is not None or not any(matches(name, target) for target in targets):
      continue  # a scanned model's layers share one stacked Linear: one stacked adapter for all
    build = functools.partial(new_adapter, module, rank)
    if layer is not None:  # stacked [L, ...] like the kernel, each layer's A drawn from its own key
      build = stacked(build, model.config.num_layers)
    module.adapter = build(rngs)
    module.adapter_scale = scale
  return model


def new_adapter(module, rank, rngs):
  """The nnx.LoRA of rank `rank` for the Linear `module` (one layer's, of a stacked module too): A he-uniform,
  B zero, carrying the kernel's logical axis names (input axis, None) and (None, output axis)."""
  names = (module.kernel.get_metadata().get("out_sharding") or (None, None))[-2:]
  return nnx.LoRA(module.in_features, rank, module.out_features, dtype=module.dtype, param_dtype=jnp.float32,
                  a_initializer=annotated(nnx.initializers.he_uniform(), (names[0], None)),
                  b_initializer=annotated(nnx.initializers.zeros, (None, names[1])), rngs=rngs)


def adapted(model):
  """{HF module name: (Linear, layer)} of the projections that carry an adapter (layer as in `projections`)."""
  return {name: (module, layer) for name, (module, layer) in projections(model).items() if module.adapter is not None}


def has_adapters(model):
  return bool(jax.tree.leaves(nnx.state(model, nnx.LoRAParam)))


def trainable(model):
  """The nnx filter of what training updates: every parameter, or with adapters the adapters and a
  sequence-classification head (the base stays frozen and takes no optimizer state)."""
  if not has_adapters(model):
    return nnx.Param
  return nnx.Any(nnx.LoRAParam, nnx.PathContains("score"))


def without_adapters(model):
  """The base model under `model`'s adapters (each B set to zero): a view that shares the base's arrays, no
  copy of the weights. DPO's reference when the policy trains adapters."""
  graphdef, adapters, rest = nnx.split(model, nnx.LoRAParam, ...)
  return nnx.merge(graphdef, jax.tree.map(jnp.zeros_like, adapters), rest)
