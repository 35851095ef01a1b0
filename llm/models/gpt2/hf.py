"""The GPT-2 family's Hugging Face mapping: config.json fields <-> ModelConfig fields, architecture names,
and the tensor-name table of its safetensors checkpoints (Conv1D weights are [in, out] in both: no
transposes)."""

# The projections LoRA adapts by default: PEFT's default target_modules for the family.
LORA_TARGETS = ("c_attn",)


def architectures(model_type):
  """(causal-LM architecture, sequence-classification architecture)."""
  del model_type
  return "GPT2LMHeadModel", "GPT2ForSequenceClassification"


def config_from_hf(c, model_type):
  """ModelConfig fields from an HF config dict (beyond the fields every family shares)."""
  del model_type
  if c.get("scale_attn_by_inverse_layer_idx") or c.get("reorder_and_upcast_attn"):
    raise ValueError("gpt2 options scale_attn_by_inverse_layer_idx / reorder_and_upcast_attn are not supported")
  if c.get("activation_function", "gelu_new") != "gelu_new":
    raise ValueError(f"gpt2 activation_function must be 'gelu_new', got {c.get('activation_function')!r}")
  hidden = c["n_embd"]
  return dict(hidden_size=hidden, num_layers=c["n_layer"], num_heads=c["n_head"], num_kv_heads=c["n_head"],
              head_dim=hidden // c["n_head"], intermediate_size=c.get("n_inner") or 4 * hidden,
              max_position_embeddings=c["n_positions"], norm_eps=c["layer_norm_epsilon"],
              qkv_bias=True, out_bias=True, mlp_bias=True,
              tie_word_embeddings=bool(c.get("tie_word_embeddings", True)))


def config_to_hf(config, common):
  """The transformers GPT2Config of `config`; `common` holds the fields every family shares."""
  import transformers
  return transformers.GPT2Config(**common, n_embd=config.hidden_size, n_layer=config.num_layers,
                                 n_head=config.num_heads, n_inner=config.intermediate_size,
                                 n_positions=config.max_position_embeddings, layer_norm_epsilon=config.norm_eps)


def param_table(config):
  """{HF tensor name: (our parameter path, transpose)} for the embeddings, blocks and final norm."""
  prefix = "transformer."
  table = {prefix + "wte.weight": (("embed", "embedding"), False),
           prefix + "wpe.weight": (("position_embed", "embedding"), False)}
  for i in range(config.num_layers):
    hf, ours = f"{prefix}h.{i}.", ("blocks", i)
    for hf_name, our_name in (("ln_1", "ln_1"), ("ln_2", "ln_2")):
      table[f"{hf}{hf_name}.weight"] = ((*ours, our_name, "scale"), False)
      table[f"{hf}{hf_name}.bias"] = ((*ours, our_name, "bias"), False)
    for hf_name, our_name in (("attn.c_attn", "c_attn"), ("attn.c_proj", "c_proj"), ("mlp.c_fc", "c_fc"),
                              ("mlp.c_proj", "mlp_c_proj")):
      table[f"{hf}{hf_name}.weight"] = ((*ours, our_name, "kernel"), False)  # Conv1D: [in, out]
      table[f"{hf}{hf_name}.bias"] = ((*ours, our_name, "bias"), False)
  table[prefix + "ln_f.weight"] = (("final_norm", "scale"), False)
  table[prefix + "ln_f.bias"] = (("final_norm", "bias"), False)
  return table
