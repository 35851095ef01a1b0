"""The Llama family's Hugging Face mapping: config.json fields <-> ModelConfig fields, architecture names,
and the tensor-name table of its safetensors checkpoints (linear weights are [out, in] there, [in, out]
here: transposed)."""

NAMES = {"llama": "Llama", "mistral": "Mistral", "qwen2": "Qwen2", "qwen3": "Qwen3"}  # HF model_type -> class-name prefix
# The projections LoRA adapts by default: PEFT's default target_modules for the family.
LORA_TARGETS = ("q_proj", "v_proj")


def architectures(model_type):
  """(causal-LM architecture, sequence-classification architecture) of an HF model_type."""
  return f"{NAMES[model_type]}ForCausalLM", f"{NAMES[model_type]}ForSequenceClassification"


def config_from_hf(c, model_type):
  """ModelConfig fields from an HF config dict (beyond the fields every family shares)."""
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
  layer_types = ()
  if model_type in ("qwen2", "qwen3") and window is not None:  # Qwen slides only from max_window_layers on
    layer_types = tuple(c.get("layer_types") or ["sliding_attention" if i >= c.get("max_window_layers", 0)
                                                 else "full_attention" for i in range(c["num_hidden_layers"])])
  return dict(hidden_size=c["hidden_size"], num_layers=c["num_hidden_layers"],
              num_heads=c["num_attention_heads"],
              num_kv_heads=c.get("num_key_value_heads") or c["num_attention_heads"],
              head_dim=c.get("head_dim") or c["hidden_size"] // c["num_attention_heads"],
              intermediate_size=c["intermediate_size"],
              max_position_embeddings=c["max_position_embeddings"], norm_eps=c["rms_norm_eps"],
              rope_theta=float(theta), rope_scaling=scaling,
              qkv_bias=bias or model_type == "qwen2", out_bias=bias, qk_norm=model_type == "qwen3",
              mlp_bias=bool(c.get("mlp_bias", False)), sliding_window=window, layer_types=layer_types,
              tie_word_embeddings=bool(c.get("tie_word_embeddings", False)))


def config_to_hf(config, common):
  """The transformers config object of `config`; `common` holds the fields every family shares."""
  import transformers
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
  if config.model_type == "qwen3":
    kwargs.update(attention_bias=config.out_bias)
  if config.model_type in ("qwen2", "qwen3"):
    kwargs.update(use_sliding_window=config.sliding_window is not None, sliding_window=config.sliding_window)
    if config.sliding_window is not None:
      kwargs.update(layer_types=[("sliding_attention" if config.slides(i) else "full_attention")
                                 for i in range(config.num_layers)])
  cls = {"llama": transformers.LlamaConfig, "mistral": transformers.MistralConfig,
         "qwen2": transformers.Qwen2Config, "qwen3": transformers.Qwen3Config}[config.model_type]
  return cls(**common, **kwargs)


def param_table(config):
  """{HF tensor name: (our parameter path, transpose)} for the embeddings, blocks and final norm."""
  prefix = "model."
  table = {prefix + "embed_tokens.weight": (("embed", "embedding"), False)}
  for i in range(config.num_layers):
    hf, ours = f"{prefix}layers.{i}.", ("blocks", i)
    table[f"{hf}input_layernorm.weight"] = ((*ours, "input_norm", "scale"), False)
    table[f"{hf}post_attention_layernorm.weight"] = ((*ours, "post_norm", "scale"), False)
    table.update(attention_table(config, hf, ours))
    for name in ("gate_proj", "up_proj", "down_proj"):
      table[f"{hf}mlp.{name}.weight"] = ((*ours, name, "kernel"), True)
      if config.mlp_bias:
        table[f"{hf}mlp.{name}.bias"] = ((*ours, name, "bias"), False)
  table[prefix + "norm.weight"] = (("final_norm", "scale"), False)
  return table


def attention_table(config, hf, ours):
  """The entries of one layer's attention (HF prefix `hf`, our block path `ours`): q/k/v/o projections with
  their biases, and the per-head q/k norms of Qwen3 and Gemma 3."""
  table = {}
  for name, bias in (("q_proj", config.qkv_bias), ("k_proj", config.qkv_bias), ("v_proj", config.qkv_bias),
                     ("o_proj", config.out_bias)):
    table[f"{hf}self_attn.{name}.weight"] = ((*ours, name, "kernel"), True)
    if bias:
      table[f"{hf}self_attn.{name}.bias"] = ((*ours, name, "bias"), False)
  for name in ("q_norm", "k_norm") if config.qk_norm else ():
    table[f"{hf}self_attn.{name}.weight"] = ((*ours, name, "scale"), False)
  return table
