"""The Gemma family's Hugging Face mapping (Gemma 2; Gemma 3's text model, model_type gemma3_text):
config.json fields <-> ModelConfig fields, architecture names, and the tensor-name table of its
safetensors checkpoints (linear weights are [out, in] there, [in, out] here: transposed)."""

from llm.models.llama.hf import attention_table

# The projections LoRA adapts by default: PEFT's default target_modules for the family.
LORA_TARGETS = ("q_proj", "v_proj")

ARCHITECTURES = {"gemma2": ("Gemma2ForCausalLM", "Gemma2ForSequenceClassification"),
                 "gemma3_text": ("Gemma3ForCausalLM", "Gemma3TextForSequenceClassification")}


def architectures(model_type):
  """(causal-LM architecture, sequence-classification architecture) of an HF model_type."""
  return ARCHITECTURES[model_type]


def rope_of(params, model_type):
  """(theta, linear scaling factor) of one rope_parameters entry; ValueError for other rope types."""
  rope_type = params.get("rope_type", "default")
  if rope_type not in ("default", "linear"):
    raise ValueError(f"{model_type}: rope_type {rope_type!r} is not supported (default, linear)")
  factor = float(params.get("factor", 1.0)) if rope_type == "linear" else 1.0
  return float(params.get("rope_theta", 10_000.0)), factor


def config_from_hf(c, model_type):
  """ModelConfig fields from an HF config dict (beyond the fields every family shares)."""
  if c.get("hidden_activation", "gelu_pytorch_tanh") != "gelu_pytorch_tanh":
    raise ValueError(f"hidden_activation must be 'gelu_pytorch_tanh' for {model_type}, got {c.get('hidden_activation')!r}")
  if c.get("use_bidirectional_attention"):
    raise ValueError(f"{model_type}: use_bidirectional_attention is not supported (causal LMs only)")
  rope = c.get("rope_parameters") or {"rope_theta": c.get("rope_theta", 10_000.0)}
  local_theta = None
  if model_type == "gemma3_text":  # one RoPE per layer type
    local_theta, local_factor = rope_of(rope.get("sliding_attention") or {"rope_theta": c.get("rope_local_base_freq", 10_000.0)},
                                        model_type)
    if local_factor != 1.0:
      raise ValueError(f"{model_type}: scaled RoPE in the sliding layers is not supported")
    rope = rope.get("full_attention", rope)
  theta, factor = rope_of(rope, model_type)
  bias = bool(c.get("attention_bias", False))
  layers = c["num_hidden_layers"]
  layer_types = tuple(c.get("layer_types") or ["sliding_attention" if i % 2 == 0 else "full_attention"
                                               for i in range(layers)])
  return dict(hidden_size=c["hidden_size"], num_layers=layers, num_heads=c["num_attention_heads"],
              num_kv_heads=c.get("num_key_value_heads") or c["num_attention_heads"], head_dim=c["head_dim"],
              intermediate_size=c["intermediate_size"], max_position_embeddings=c["max_position_embeddings"],
              norm_eps=c["rms_norm_eps"], rope_theta=theta, rope_scaling=(("factor", factor),) if factor != 1.0 else (),
              local_rope_theta=local_theta, qkv_bias=bias, out_bias=bias, qk_norm=model_type == "gemma3_text",
              embedding_multiplier=c["hidden_size"] ** 0.5, query_pre_attn_scalar=c["query_pre_attn_scalar"],
              attn_logit_softcap=c.get("attn_logit_softcapping"), final_logit_softcap=c.get("final_logit_softcapping"),
              sliding_window=c.get("sliding_window"), layer_types=layer_types,
              tie_word_embeddings=bool(c.get("tie_word_embeddings", True)))


def config_to_hf(config, common):
  """The transformers config object of `config`; `common` holds the fields every family shares."""
  import transformers
  rope = {"rope_type": "linear", "factor": dict(config.rope_scaling)["factor"]} if config.rope_scaling else {
      "rope_type": "default"}
  rope["rope_theta"] = config.rope_theta
  kwargs = dict(hidden_size=config.hidden_size, num_hidden_layers=config.num_layers,
                num_attention_heads=config.num_heads, num_key_value_heads=config.num_kv_heads,
                head_dim=config.head_dim, intermediate_size=config.intermediate_size,
                max_position_embeddings=config.max_position_embeddings, rms_norm_eps=config.norm_eps,
                hidden_activation="gelu_pytorch_tanh", attention_bias=config.out_bias,
                query_pre_attn_scalar=config.query_pre_attn_scalar, sliding_window=config.sliding_window,
                layer_types=list(config.layer_types), attn_logit_softcapping=config.attn_logit_softcap,
                final_logit_softcapping=config.final_logit_softcap)
  if config.model_type == "gemma2":
    return transformers.Gemma2Config(**common, **kwargs, rope_parameters=rope)
  local = {"rope_type": "default", "rope_theta": config.local_rope_theta}
  return transformers.Gemma3TextConfig(**common, **kwargs,
                                       rope_parameters={"full_attention": rope, "sliding_attention": local})


def param_table(config):
  """{HF tensor name: (our parameter path, transpose)} for the embeddings, blocks and final norm."""
  prefix = "model."
  table = {prefix + "embed_tokens.weight": (("embed", "embedding"), False)}
  norms = {"input_layernorm": "input_norm", "post_attention_layernorm": "post_attn_norm",
           "pre_feedforward_layernorm": "pre_mlp_norm", "post_feedforward_layernorm": "post_mlp_norm"}
  for i in range(config.num_layers):
    hf, ours = f"{prefix}layers.{i}.", ("blocks", i)
    for theirs, name in norms.items():
      table[f"{hf}{theirs}.weight"] = ((*ours, name, "scale"), False)
    table.update(attention_table(config, hf, ours))
    for name in ("gate_proj", "up_proj", "down_proj"):
      table[f"{hf}mlp.{name}.weight"] = ((*ours, name, "kernel"), True)
  table[prefix + "norm.weight"] = (("final_norm", "scale"), False)
  return table
