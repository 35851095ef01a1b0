"""ModelConfig: one frozen dataclass for every model family, read from and written to HF config.json
(the family-specific fields through the family's `hf` module, llm.models.registry).

Dtypes: `param_dtype` is the dtype parameters are stored (and checkpointed) in; `dtype` is the compute
dtype activations and matmuls run in.
"""

import dataclasses
from typing import Any

import jax.numpy as jnp

from llm.models import registry

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}
# What a rematerialized layer keeps from its forward pass for the backward pass (jax.checkpoint_policies):
# nothing but its input (the least memory), every matmul output, or the matmul outputs without batch
# dimensions (the projections, not the attention scores).
REMAT_POLICIES = ("nothing_saveable", "dots_saveable", "dots_with_no_batch_dims_saveable")
# The attention of a forward pass over a sequence's own tokens (llm.models.attention.attend_layer): XLA's
# (llm.models.attention.attend), or the Pallas splash kernel for TPU (llm.models.splash; interpret mode on CPU).
ATTENTION = ("xla", "splash")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Architecture of a decoder-only transformer (shapes in the names of llm.models.llama / llm.models.gpt2).

  num_labels = None: a causal LM (logits [B, T, V]); an int: a `*ForSequenceClassification` scalar
  head (scores [B, num_labels] of the last non-padding token).
  """
  model_type: str  # an HF model_type of llm.models.registry.FAMILIES
  vocab_size: int
  hidden_size: int
  num_layers: int
  num_heads: int
  num_kv_heads: int
  head_dim: int
  intermediate_size: int
  max_position_embeddings: int
  norm_eps: float
  rope_theta: float = 10_000.0
  rope_scaling: tuple = ()  # Llama 3: (("factor", 8.0), ("low_freq_factor", 1.0), ...), hashable
  qkv_bias: bool = False
  out_bias: bool = False
  mlp_bias: bool = False
  qk_norm: bool = False  # Qwen3, Gemma 3: RMSNorm over each head's queries and keys before RoPE
  embedding_multiplier: float = 1.0  # Gemma: token embeddings times sqrt(hidden_size)
  query_pre_attn_scalar: int | float | None = None  # Gemma: attention scale query_pre_attn_scalar^-1/2 (None: head_dim)
  attn_logit_softcap: float | None = None  # Gemma 2: attention scores cap * tanh(s / cap)
  final_logit_softcap: float | None = None  # Gemma 2: LM logits cap * tanh(logits / cap)
  local_rope_theta: float | None = None  # Gemma 3: the RoPE base of the sliding layers (None: rope_theta)
  tie_word_embeddings: bool = False
  sliding_window: int | None = None  # tokens a query sees (itself included) in the layers that slide
  layer_types: tuple = ()  # per layer "full_attention" | "sliding_attention" (HF's); empty: all slide if windowed
  num_labels: int | None = None
  pad_token_id: int | None = None
  bos_token_id: int | None = None
  eos_token_id: int | tuple | None = None
  generation_eos_token_ids: tuple = ()  # generation_config.json's eos ids (chat models' end-of-turn tokens)
  dtype: str = "float32"  # compute dtype (activations, matmuls)
  param_dtype: str = "float32"  # storage dtype of the parameters
  remat: bool = False  # rematerialize each layer in the backward pass
  remat_policy: str = "nothing_saveable"  # what a rematerialized layer keeps: one of REMAT_POLICIES
  scan_layers: bool = False  # one stacked Block [L, ...] run by lax.scan (llm.models.transformer.run_blocks)
  attention: str = "xla"  # one of ATTENTION

  def __post_init__(self):
    registry.family(self.model_type)  # ValueError naming the supported model types
    for name in ("vocab_size", "hidden_size", "num_layers", "num_heads", "num_kv_heads", "head_dim"):
      if getattr(self, name) < 1:
        raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
    if self.num_heads % self.num_kv_heads:
      raise ValueError(f"num_heads ({self.num_heads}) must be a multiple of num_kv_heads ({self.num_kv_heads})")
    if self.layer_types and (len(self.layer_types) != self.num_layers or
                             set(self.layer_types) - {"full_attention", "sliding_attention"}):
      raise ValueError(f"layer_types must name full_attention or sliding_attention for each of the "
                       f"{self.num_layers} layers, got {self.layer_types}")
    if self.attention not in ATTENTION:
      raise ValueError(f"attention must be one of {ATTENTION}, got {self.attention!r}")
    if self.remat_policy not in REMAT_POLICIES:
      raise ValueError(f"remat_policy must be one of {REMAT_POLICIES}, got {self.remat_policy!r}")
    for name in ("dtype", "param_dtype"):
      if getattr(self, name) not in DTYPES:
        raise ValueError(f"{name} must be one of {sorted(DTYPES)}, got {getattr(self, name)!r}")

  @property
  def family(self):
    """The family package (llm.models.llama, llm.models.gpt2, ...) that implements this model."""
    return registry.family(self.model_type)

  def slides(self, layer):
    """Whether layer `layer` attends through the sliding window."""
    return self.sliding_window is not None and (not self.layer_types or self.layer_types[layer] == "sliding_attention")

  @property
  def compute_dtype(self):
    return DTYPES[self.dtype]

  @property
  def weight_dtype(self):
    return DTYPES[self.param_dtype]


def from_hf(hf_config: Any, **overrides: Any) -> ModelConfig:
  """ModelConfig from a transformers PretrainedConfig (or its to_dict()); overrides e.g. dtype="bfloat16".

  Raises ValueError naming the model_type when the architecture is not supported.
  """
  c = hf_config if isinstance(hf_config, dict) else hf_config.to_dict()
  model_type = c.get("model_type")
  if model_type not in registry.FAMILIES:
    raise ValueError(f"unsupported model_type {model_type!r} (architectures {c.get('architectures')}); "
                     f"supported: {sorted(registry.FAMILIES)}")
  architectures = c.get("architectures") or []
  num_labels = len(c["id2label"]) if any("SequenceClassification" in a for a in architectures) else None
  eos = c.get("eos_token_id")
  config = ModelConfig(model_type=model_type, vocab_size=c["vocab_size"], num_labels=num_labels,
                       pad_token_id=c.get("pad_token_id"), bos_token_id=c.get("bos_token_id"),
                       eos_token_id=tuple(eos) if isinstance(eos, list) else eos,
                       **registry.family(model_type).config_from_hf(c, model_type))
  return dataclasses.replace(config, **overrides)


def to_hf(config: ModelConfig) -> Any:
  """A transformers PretrainedConfig for `config` (the architecture written to config.json)."""
  heads = config.num_labels is not None
  causal_lm, sequence_classification = config.family.architectures(config.model_type)
  common = dict(vocab_size=config.vocab_size, tie_word_embeddings=config.tie_word_embeddings,
                pad_token_id=config.pad_token_id, bos_token_id=config.bos_token_id,
                eos_token_id=list(config.eos_token_id) if isinstance(config.eos_token_id, tuple)
                else config.eos_token_id, architectures=[sequence_classification if heads else causal_lm])
  if heads:
    common["num_labels"] = config.num_labels
  return config.family.config_to_hf(config, common)
