"""HF checkpoint I/O: a local folder with config.json and safetensors (one file, or shards with
model.safetensors.index.json) <-> llm.models.transformer.Transformer. Never pickle.

The mapping from HF tensor names to our parameter paths is the family's table (`<family>/hf.py`,
param_table) plus the head; linear weights are stored [out, in] by transformers (torch.nn.Linear) and
[in, out] here, GPT-2's Conv1D weights are [in, out] in both.
"""

import functools
import json
import os
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from gshf_jax import atomic
from llm.models import config as model_config
from llm.models import lora
from llm.models.config import ModelConfig
from llm.models.layers import INIT_STD, Linear
from llm.models.transformer import Transformer, layer_path

INDEX_FILE = "model.safetensors.index.json"
SINGLE_FILE = "model.safetensors"
# Buffers some checkpoints carry that are not parameters (old GPT-2 attention masks, rotary caches).
IGNORED_SUFFIXES = (".attn.bias", ".attn.masked_bias", "rotary_emb.inv_freq")


def param_table(config: ModelConfig) -> dict[str, tuple[tuple, bool]]:
  """{HF tensor name: (our parameter path, transpose)} for every parameter: the family's table for the
  body, then the head (score, or an untied LM head)."""
  table = dict(config.family.param_table(config))
  if config.num_labels is not None:
    table["score.weight"] = (("score", "kernel"), True)
  elif not config.tie_word_embeddings:
    table["lm_head.weight"] = (("lm_head", "kernel"), True)
  return table


def stored_layout(config: ModelConfig, table: dict) -> dict[tuple, list[tuple]]:
  """{parameter path in the model: [(layer, HF tensor name, transpose)]} of a tensor table: one entry with
  layer None per parameter, or, with config.scan_layers, each stacked block parameter with its L layers'
  tensors in layer order (llm.models.transformer.layer_path)."""
  layout = {}
  for name, (our_path, transpose) in table.items():
    stored, layer = layer_path(config, our_path)
    layout.setdefault(stored, []).append((layer, name, transpose))
  return {stored: sorted(layers, key=lambda entry: -1 if entry[0] is None else entry[0])
          for stored, layers in layout.items()}


def tensor_files(path: str) -> dict[str, str]:
  """{tensor name: safetensors file} of a checkpoint folder (single file or sharded index)."""
  index = os.path.join(path, INDEX_FILE)
  if os.path.exists(index):
    try:
      with open(index) as f:
        weight_map = json.load(f)["weight_map"]
    except (ValueError, KeyError, TypeError) as e:
      raise ValueError(f"{index}: not a safetensors index ({e!r})") from None
    files = {name: os.path.join(path, file) for name, file in weight_map.items()}
    for file in sorted(set(files.values())):
      stored_tensors(file)  # every shard's header is checked before any weight is read
    return files
  single = os.path.join(path, SINGLE_FILE)
  if not os.path.exists(single):
    found = sorted(os.listdir(path)) if os.path.isdir(path) else "not a folder"
    raise ValueError(f"{path}: no {SINGLE_FILE} or {INDEX_FILE} (found {found}); only safetensors "
                     "checkpoints are read, never pickle (.bin)")
  return {name: single for name in stored_tensors(single)}


def stored_tensors(file: str) -> list[str]:
  """The tensor names of a safetensors file. Raises ValueError naming the file when it is missing, empty,
  truncated or not safetensors (the format checks that the header's offsets fit the file's size)."""
  from safetensors import SafetensorError, safe_open
  try:
    with safe_open(file, framework="numpy") as f:
      return list(f.keys())
  except (OSError, SafetensorError) as e:
    raise ValueError(f"{file}: not a readable safetensors file ({e})") from None


def load_hf_checkpoint(path: str, dtype: str = "float32", mesh: jax.sharding.Mesh | None = None,
                       rules: Sequence[tuple[str, Any]] | None = None, *, new_head_seed: int | None = None,
                       **config_overrides: Any) -> tuple[Transformer, ModelConfig]:
  """(model, config) from a local HF folder.

  Args:
    path: folder with config.json and safetensors weights.
    dtype: both the parameter (storage) and the compute dtype ("float32" or "bfloat16"); set them apart
      through config_overrides (e.g. param_dtype="float32", dtype="bfloat16", remat=True).
    mesh: optional jax.sharding.Mesh: each tensor is read slice by slice straight onto its shards
      (llm.parallel.sharding's logical rules), never as a full copy per device.
    rules: logical-axis rules for the mesh (default llm.parallel.sharding.DEFAULT_RULES).
    new_head_seed: with num_labels=k in config_overrides, a causal-LM checkpoint loads into a
      sequence-classification model whose score head is new (normal(0.02) from this seed) and whose LM
      head is dropped: how a reward model starts from a policy.

  Raises:
    ValueError: unsupported architecture, missing or unexpected tensors, shape mismatches.
  """
  from safetensors import safe_open

  hf_config, config = read_config(path, **{"dtype": dtype, "param_dtype": dtype, **config_overrides})
  graphdef, state = abstract_model(config)
  state = jax.tree.map(lambda x: x, state)  # fresh Variables to fill; the cached ones stay abstract
  flat = dict(nnx.to_flat_state(state))
  table = param_table(config)
  files = tensor_files(path)
  names = set(files)
  new_head = new_head_seed is not None and "score.weight" not in names
  if new_head:
    table.pop("score.weight")
    names.discard("lm_head.weight")
  missing = sorted(set(table) - names)
  unexpected = sorted(n for n in names - set(table) if not n.endswith(IGNORED_SUFFIXES)
                      and not (config.tie_word_embeddings and n == "lm_head.weight"))
  if missing or unexpected:
    raise ValueError(f"{path}: checkpoint does not match {config.model_type} "
                     f"({hf_config.architectures}): missing {missing[:8]}{'...' if len(missing) > 8 else ''}, "
                     f"unexpected {unexpected[:8]}{'...' if len(unexpected) > 8 else ''}")
  if mesh is not None:
    from llm.parallel import sharding
    shardings = sharding.param_shardings(nnx.merge(graphdef, state), mesh, rules or sharding.DEFAULT_RULES)
    flat_shardings = dict(nnx.to_flat_state(shardings))
  handles = {file: safe_open(file, framework="numpy") for file in set(files.values())}
  try:
    for our_path, layers in stored_layout(config, table).items():
      variable = flat[our_path]
      target = variable.get_value()
      stacked = layers[0][0] is not None
      tensors = []
      for layer, name, transpose in layers:
        tensor = handles[files[name]].get_slice(name)
        shape = tuple(tensor.get_shape())
        expected = target.shape[1:] if stacked else target.shape
        if shape != tuple(expected[::-1] if transpose else expected):
          raise ValueError(f"{path}: tensor {name} has shape {list(shape)}, expected "
                           f"{list(expected[::-1] if transpose else expected)} for {'.'.join(map(str, our_path))}"
                           f"{'' if layer is None else f' layer {layer}'}")
        tensors.append((tensor, transpose))

      def read_one(tensor, transpose, index, dtype=target.dtype):
        ndim = len(tensor.get_shape())
        index = tuple(index) + (slice(None),) * (ndim - len(index))
        block = tensor[index[::-1]].T if transpose else tensor[index]
        return np.asarray(block).astype(dtype)

      def read(index, tensors=tensors, stacked=stacked):
        if not stacked:
          return read_one(*tensors[0], index)
        index = tuple(index) or (slice(None),)
        return np.stack([read_one(*tensors[i], index[1:]) for i in range(len(tensors))[index[0]]])

      if mesh is None:
        variable.set_value(jnp.asarray(read(())))
      else:
        sharding_of = flat_shardings[our_path].get_value()
        variable.set_value(jax.make_array_from_callback(target.shape, sharding_of, read))
  finally:
    handles.clear()
  if new_head:
    head = flat[("score", "kernel")]
    value = INIT_STD * jax.random.normal(jax.random.key(new_head_seed), head.get_value().shape, head.get_value().dtype)
    if mesh is not None:
      value = jax.device_put(value, flat_shardings[("score", "kernel")].get_value())
    head.set_value(value)
  model = nnx.merge(graphdef, nnx.from_flat_state(flat))
  return model, config


def read_config(path: str, **overrides: Any) -> tuple[Any, ModelConfig]:
  """(transformers config, ModelConfig with `overrides`) of the HF folder `path`'s config.json (no weights
  read), normalized by transformers as every load reads it.

  Raises:
    ValueError: no config.json, invalid JSON, or an unsupported architecture.
  """
  import transformers
  config_file = os.path.join(path, "config.json")
  if not os.path.exists(config_file):
    raise ValueError(f"{path}: no config.json")
  try:
    with open(config_file) as f:
      json.load(f)
  except ValueError as e:
    raise ValueError(f"{config_file}: not valid JSON ({e})") from None
  hf_config = transformers.AutoConfig.from_pretrained(path, local_files_only=True)
  return hf_config, model_config.from_hf(hf_config, **{"generation_eos_token_ids": generation_eos_ids(path),
                                                       **overrides})


@functools.lru_cache(maxsize=8)
def abstract_model(config: ModelConfig):
  """nnx.split of a Transformer of `config` with jax.ShapeDtypeStruct values (no memory), built once per
  config: building it traces every initializer, and a pipeline loads many checkpoints of one architecture."""
  return nnx.split(nnx.eval_shape(lambda: Transformer(config, rngs=nnx.Rngs(0))))


def generation_eos_ids(path: str) -> tuple:
  """The eos ids of the folder's generation_config.json (an int or a list there), () without one."""
  file = os.path.join(path, "generation_config.json")
  if not os.path.exists(file):
    return ()
  try:
    with open(file) as f:
      eos = json.load(f).get("eos_token_id")
  except (ValueError, AttributeError) as e:
    raise ValueError(f"{file}: not a valid generation config ({e})") from None
  return tuple(eos) if isinstance(eos, list) else () if eos is None else (eos,)


def save_hf_checkpoint(model: Transformer, path: str, *, max_shard_bytes: int | None = None) -> None:
  """Write `model` as an HF folder (config.json + safetensors, sharded above max_shard_bytes) that
  transformers' AutoModelForCausalLM / AutoModelForSequenceClassification loads; a projection with a LoRA
  adapter (llm.models.lora) is written merged, W + scale * A B. Atomic: written to a temporary folder next
  to `path`, then renamed over it."""
  import transformers
  from safetensors.numpy import save_file

  config = model.config
  flat = dict(nnx.to_flat_state(nnx.state(model, nnx.Param)))
  modules = dict(nnx.iter_modules(model))
  table = param_table(config)
  tensors = {}
  for our_path, layers in stored_layout(config, table).items():
    module = modules.get(our_path[:-1])
    kernel = our_path[-1] == "kernel" and isinstance(module, Linear)  # merged_kernel: W itself without adapter
    value = np.asarray(jax.device_get(module.merged_kernel() if kernel else flat[our_path].get_value()))
    for layer, name, transpose in layers:
      layer_value = value if layer is None else value[layer]
      tensors[name] = np.ascontiguousarray(layer_value.T if transpose else layer_value)
  tensors = {name: tensors[name] for name in table}  # the table's order, scanned or not (shards split by it)
  def fill(folder):
    model_config.to_hf(config).save_pretrained(folder)
    if config.generation_eos_token_ids:
      transformers.GenerationConfig(bos_token_id=config.bos_token_id, pad_token_id=config.pad_token_id,
                                    eos_token_id=list(config.generation_eos_token_ids)).save_pretrained(folder)
    shards = [[]]
    size = 0
    for name, value in tensors.items():
      if max_shard_bytes and shards[-1] and size + value.nbytes > max_shard_bytes:
        shards.append([])
        size = 0
      shards[-1].append(name)
      size += value.nbytes
    if len(shards) == 1:
      save_file(tensors, os.path.join(folder, SINGLE_FILE), metadata={"format": "pt"})
      return
    weight_map = {}
    for i, names in enumerate(shards):
      file = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
      save_file({n: tensors[n] for n in names}, os.path.join(folder, file), metadata={"format": "pt"})
      weight_map.update({n: file for n in names})
    total = sum(v.nbytes for v in tensors.values())
    with open(os.path.join(folder, INDEX_FILE), "w") as f:
      json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)

  atomic.write_folder(path, fill)


def save_peft_adapter(model: Transformer, path: str, *, alpha: float, targets: Sequence[str] = (),
                      rslora: bool = False, base_model: str = "") -> None:
  """Write `model`'s LoRA adapters (llm.models.lora) as a PEFT adapter folder, adapter_config.json and
  adapter_model.safetensors, that `peft.PeftModel.from_pretrained(<transformers base model>, path)` loads
  to the same outputs: lora_A [r, in] and lora_B [out, r] under PEFT's names
  (base_model.model.<HF module>.lora_A.weight), and a sequence-classification head as PEFT's
  modules_to_save. GPT-2's Conv1D projections are marked fan_in_fan_out, as PEFT requires. Atomic.

  Args:
    alpha, targets, rslora: the adapters' settings as given to lora.add_adapters (targets () = the
      family's default); written to the config so that PEFT scales by alpha / r (or alpha / sqrt r).
    base_model: the base's folder or repo id, recorded as base_model_name_or_path.
  """
  from safetensors.numpy import save_file

  config = model.config
  adapted = lora.adapted(model)
  if not adapted:
    raise ValueError("the model has no LoRA adapters to export")
  table = config.family.param_table(config)
  tensors, rank = {}, None
  for name, (module, layer) in adapted.items():
    a, b = (np.asarray(jax.device_get(x[...] if layer is None else x[layer]))
            for x in (module.adapter.lora_a, module.adapter.lora_b))
    rank = a.shape[1]
    tensors[f"base_model.model.{name}.lora_A.weight"] = np.ascontiguousarray(a.T)
    tensors[f"base_model.model.{name}.lora_B.weight"] = np.ascontiguousarray(b.T)
  fan_in_fan_out = not table[f"{next(iter(adapted))}.weight"][1]  # stored [in, out] (Conv1D), not transposed
  sequence_classification = config.num_labels is not None
  if sequence_classification:
    head = np.asarray(jax.device_get(model.score.kernel[...]))
    tensors["base_model.model.score.weight"] = np.ascontiguousarray(head.T)
  target_modules = lora.ALL_LINEAR if lora.ALL_LINEAR in targets else list(targets or config.family.LORA_TARGETS)
  adapter_config = {
      "peft_type": "LORA", "task_type": "SEQ_CLS" if sequence_classification else "CAUSAL_LM",
      "base_model_name_or_path": base_model or None, "r": rank, "lora_alpha": alpha, "use_rslora": rslora,
      "target_modules": target_modules, "lora_dropout": 0.0, "bias": "none",
      "fan_in_fan_out": fan_in_fan_out, "modules_to_save": ["score"] if sequence_classification else None,
      "init_lora_weights": True, "inference_mode": True}

  def fill(folder):
    save_file(tensors, os.path.join(folder, "adapter_model.safetensors"), metadata={"format": "pt"})
    with open(os.path.join(folder, "adapter_config.json"), "w") as f:
      json.dump(adapter_config, f, indent=2)

  atomic.write_folder(path, fill)
