"""ModelConfig: one frozen dataclass for every model family, read from and written to HF config.json.

Families: "llama" (Llama 2/3, Mistral and Qwen2 through flags: grouped-query attention, attention bias,
tied embeddings, RoPE theta and Llama-3 scaling, RMSNorm eps, sliding window) and "gpt2".
"""

import dataclasses

import jax.numpy as jnp

# HF model_type -> family; HF architectures we read and write.
FAMILIES = {"llama": "llama", "mistral": "llama", "qwen2": "llama", "gpt2": "gpt2"}
CAUSAL_LM = {"llama": "LlamaForCausalLM", "mistral": "MistralForCausalLM", "qwen2": "Qwen2ForCausalLM",
             "gpt2": "GPT2LMHeadModel"}
SEQUENCE_CLASSIFICATION = {"llama": "LlamaForSequenceClassification",
                           "mistral": "MistralForSequenceClassification",
                           "qwen2": "Qwen2ForSequenceClassification", "gpt2": "GPT2ForSequenceClassification"}
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Architecture of a decoder-only transformer (shapes in the names of llm.llama / llm.gpt2).

  num_labels = None: a causal LM (logits [B, T, V]); an int: a `*ForSequenceClassification` scalar
  head (scores [B, num_labels] of the last non-padding token).
  """
  model_type: str  # "llama" | "mistral" | "qwen2" | "gpt2"
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
  tie_word_embeddings: bool = False
  sliding_window: int | None = None
  num_labels: int | None = None
  pad_token_id: int | None = None
  bos_token_id: int | None = None
  eos_token_id: int | tuple | None = None
  dtype: str = "float32"  # compute dtype
  param_dtype: str = "float32"
  remat: bool = False  # rematerialize each layer in the backward pass

  def __post_init__(self):
    if self.model_type not in FAMILIES:
      raise ValueError(f"model_type must be one of {sorted(FAMILIES)}, got {self.model_type!r}")
    for name in ("vocab_size", "hidden_size", "num_layers", "num_heads", "num_kv_heads", "head_dim"):
      if getattr(self, name) < 1:
        raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
    if self.num_heads % self.num_kv_heads:
      raise ValueError(f"num_heads ({self.num_heads}) must be a multiple of num_kv_heads ({self.num_kv_heads})")
    for name in ("dtype", "param_dtype"):
      if getattr(self, name) not in DTYPES:
        raise ValueError(f"{name} must be one of {sorted(DTYPES)}, got {getattr(self, name)!r}")

  @property
  def family(self):
    return FAMILIES[self.model_type]

  @property
  def compute_dtype(self):
    return DTYPES[self.dtype]

  @property
  def weight_dtype(self):
    return DTYPES[self.param_dtype]


def from_hf(hf_config, **overrides):
  """ModelConfig from a transformers PretrainedConfig (or its to_dict()); overrides e.g. dtype="bfloat16".

  Raises ValueError naming the model_type when the architecture is not supported.
  """
  c = hf_config if isinstance(hf_config, dict) else hf_config.to_dict()
  model_type = c.get("model_type")
  if model_type not in FAMILIES:
    raise ValueError(f"unsupported model_type {model_type!r} (architectures {c.get('architectures')}); "
                     f"supported: {sorted(FAMILIES)}")
  architectures = c.get("architectures") or []
  num_labels = len(c["id2label"]) if any("SequenceClassification" in a for a in architectures) else None
  common = dict(model_type=model_type, vocab_size=c["vocab_size"], num_labels=num_labels,
                pad_token_id=c.get("pad_token_id"), bos_token_id=c.get("bos_token_id"),
                eos_token_id=tuple(c["eos_token_id"]) if isinstance(c.get("eos_token_id"), list)
                else c.get("eos_token_id"),
                tie_word_embeddings=bool(c.get("tie_word_embeddings", model_type == "gpt2")))
  if model_type == "gpt2":
    if c.get("scale_attn_by_inverse_layer_idx") or c.get("reorder_and_upcast_attn"):
      raise ValueError("gpt2 options scale_attn_by_inverse_layer_idx / reorder_and_upcast_attn are not supported")
    if c.get("activation_function", "gelu_new") != "gelu_new":
      raise ValueError(f"gpt2 activation_function must be 'gelu_new', got {c.get('activation_function')!r}")
    hidden = c["n_embd"]
    config = ModelConfig(**common, hidden_size=hidden, num_layers=c["n_layer"], num_heads=c["n_head"],
                         num_kv_heads=c["n_head"], head_dim=hidden // c["n_head"],
                         intermediate_size=c.get("n_inner") or 4 * hidden,
                         max_position_embeddings=c["n_positions"], norm_eps=c["layer_norm_epsilon"],
                         qkv_bias=True, out_bias=True, mlp_bias=True)
  else:
    if c.get("hidden_act", "silu") != "silu":
      raise ValueError(f"hidden_act must be 'silu' for {model_type}, got {c.get('hidden_act')!r}")
    rope = dict(c.get("rope_parameters") or {})
    theta = rope.pop("rope_theta", c.get("rope_theta", 10_000.0))
    rope_type = rope.pop("rope_type", "default")
    if rope_type not in ("default", "llama3"):
      raise ValueError(f"rope_type {rope_type!r} is not supported (default, llama3)")
    scaling = tuple(sorted(rope.items())) if rope_type == "llama3" else ()
    bias = bool(c.get("attention_bias", False))
    window = c.get("sliding_window") if (model_type == "mistral" or c.get("use_sliding_window")) else None
    config = ModelConfig(**common, hidden_size=c["hidden_size"], num_layers=c["num_hidden_layers"],
                         num_heads=c["num_attention_heads"],
                         num_kv_heads=c.get("num_key_value_heads") or c["num_attention_heads"],
                         head_dim=c.get("head_dim") or c["hidden_size"] // c["num_attention_heads"],
                         intermediate_size=c["intermediate_size"],
                         max_position_embeddings=c["max_position_embeddings"], norm_eps=c["rms_norm_eps"],
                         rope_theta=float(theta), rope_scaling=scaling,
                         qkv_bias=bias or model_type == "qwen2", out_bias=bias,
                         mlp_bias=bool(c.get("mlp_bias", False)), sliding_window=window)
  return dataclasses.replace(config, **overrides)


def to_hf(config):
  """A transformers PretrainedConfig for `config` (the architecture written to config.json)."""
  import transformers
  heads = config.num_labels is not None
  architecture = (SEQUENCE_CLASSIFICATION if heads else CAUSAL_LM)[config.model_type]
  common = dict(vocab_size=config.vocab_size, tie_word_embeddings=config.tie_word_embeddings,
                pad_token_id=config.pad_token_id, bos_token_id=config.bos_token_id,
                eos_token_id=list(config.eos_token_id) if isinstance(config.eos_token_id, tuple)
                else config.eos_token_id, architectures=[architecture])
  if heads:
    common["num_labels"] = config.num_labels
  if config.model_type == "gpt2":
    return transformers.GPT2Config(**common, n_embd=config.hidden_size, n_layer=config.num_layers,
                                   n_head=config.num_heads, n_inner=config.intermediate_size,
                                   n_positions=config.max_position_embeddings,
                                   layer_norm_epsilon=config.norm_eps)
  rope = {"rope_type": "llama3" if config.rope_scaling else "default", "rope_theta": config.rope_theta,
          **dict(config.rope_scaling)}
  kwargs = dict(hidden_size=config.hidden_size, num_hidden_layers=config.num_layers,
                num_attention_heads=config.num_heads, num_key_value_heads=config.num_kv_heads,
                head_dim=config.head_dim, intermediate_size=config.intermediate_size,
                max_position_embeddings=config.max_position_embeddings, rms_norm_eps=config.norm_eps,
                rope_parameters=rope)
  if config.model_type == "llama":
    kwargs.update(attention_bias=config.out_bias, mlp_bias=config.mlp_bias)
  if config.model_type == "mistral":
    kwargs.update(sliding_window=config.sliding_window)
  if config.model_type == "qwen2":
    kwargs.update(use_sliding_window=config.sliding_window is not None, sliding_window=config.sliding_window)
  cls = {"llama": transformers.LlamaConfig, "mistral": transformers.MistralConfig,
         "qwen2": transformers.Qwen2Config}[config.model_type]
  return cls(**common, **kwargs)
