"""Tiny HF models of every supported family, built with transformers' PyTorch classes inside the tests
(no download), and saved as safetensors folders. Fixtures that need torch skip without it; the golden
fixtures in tests/llm/golden/ cover the no-torch case."""

import os
import sys

import numpy as np
import pytest
import transformers

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # tiny.py, for tests and workers

VOCAB = 97
COMMON = dict(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4)


def hf_configs():
  """One tiny config per family and feature: GQA, Llama-3 RoPE scaling, attention bias, tied embeddings,
  Mistral's sliding window (shorter than the test sequences), Qwen2's qkv bias, Qwen2's window in the layers
  from max_window_layers on only, Qwen3's q/k norms (with a head_dim that is not hidden / heads), Gemma 2 (soft-capped scores
  and logits small enough to bite, sliding layers), Gemma 3 (q/k norms, linear-scaled global RoPE, a
  local RoPE base, one global layer), GPT-2."""
  llama3_rope = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                 "original_max_position_embeddings": 16, "rope_theta": 500000.0}
  return {
      "llama": transformers.LlamaConfig(**COMMON, num_key_value_heads=2),
      "llama3_tied_bias": transformers.LlamaConfig(**COMMON, num_key_value_heads=2, rope_parameters=llama3_rope,
                                                   attention_bias=True, mlp_bias=True, tie_word_embeddings=True,
                                                   rms_norm_eps=1e-5),
      "mistral_window": transformers.MistralConfig(**COMMON, num_key_value_heads=1, sliding_window=5),
      "qwen2": transformers.Qwen2Config(**COMMON, num_key_value_heads=2),
      "qwen2_window": transformers.Qwen2Config(**{**COMMON, "num_hidden_layers": 3}, num_key_value_heads=2,
                                               use_sliding_window=True, sliding_window=3, max_window_layers=1),
      "qwen3": transformers.Qwen3Config(**COMMON, num_key_value_heads=2, head_dim=16, attention_bias=True),
      "gemma2": transformers.Gemma2Config(**COMMON, num_key_value_heads=2, head_dim=16, query_pre_attn_scalar=12,
                                          sliding_window=4, attn_logit_softcapping=0.005, final_logit_softcapping=0.5),
      "gemma3": transformers.Gemma3TextConfig(**{**COMMON, "num_hidden_layers": 3}, num_key_value_heads=1, head_dim=16,
                                              query_pre_attn_scalar=24, sliding_window=4,
                                              layer_types=["sliding_attention", "full_attention", "sliding_attention"],
                                              rope_parameters={"full_attention": {"rope_type": "linear", "factor": 4.0,
                                                                                  "rope_theta": 1e6},
                                                               "sliding_attention": {"rope_type": "default",
                                                                                     "rope_theta": 100.0}}),
      "gpt2": transformers.GPT2Config(vocab_size=VOCAB, n_embd=32, n_layer=2, n_head=4, n_positions=64,
                                      bos_token_id=0, eos_token_id=0),
  }


def build_hf(config, head="causal", seed=0):
  """A transformers PyTorch model with random weights (norm weights and biases perturbed too)."""
  import torch
  torch.manual_seed(seed)
  config = config.__class__(**{**config.to_dict(), "pad_token_id": 0})
  cls = transformers.AutoModelForCausalLM if head == "causal" else transformers.AutoModelForSequenceClassification
  if head != "causal":
    config.num_labels = 1
  model = cls.from_config(config, attn_implementation="eager").eval()
  with torch.no_grad():  # non-trivial norms and biases (transformers initializes them to 1 and 0)
    for name, param in model.named_parameters():
      if name.endswith("bias") or "norm" in name or "ln_" in name:
        param.add_(0.1 * torch.randn_like(param))
  return model


@pytest.fixture(scope="session")
def hf_folder(tmp_path_factory):
  """(name, head) -> (torch model, folder) with the model saved as safetensors."""
  cache = {}

  pytest.importorskip("torch", reason="PyTorch parity tests need torch (the test extra pins it)")

  def make(name, head="causal"):
    if (name, head) not in cache:
      model = build_hf(hf_configs()[name], head)
      folder = tmp_path_factory.mktemp(f"{name}_{head}")
      model.save_pretrained(folder)
      cache[name, head] = (model, str(folder))
    return cache[name, head]

  return make


@pytest.fixture(scope="session")
def tiny_hf_configs():
  return hf_configs()


@pytest.fixture(scope="session")
def padded_batch():
  return make_padded_batch


def make_padded_batch(rng, batch=3, length=9):
  """Token ids with row 1 left-padded by 3 and row 2 right-padded by 3; positions = cumsum(mask) - 1."""
  ids = rng.integers(1, VOCAB, (batch, length))
  mask = np.ones((batch, length), np.int64)
  mask[1, :3] = 0
  mask[2, -3:] = 0
  ids = np.where(mask == 1, ids, 0)
  positions = np.maximum(np.cumsum(mask, -1) - 1, 0)
  return ids, mask, positions


@pytest.fixture(scope="session")
def assets(tmp_path_factory):
  """tests/llm/tiny.py's tokenizer, tiny Llama policy folder and preference JSONL files."""
  import tiny
  return tiny.build(str(tmp_path_factory.mktemp("assets")))

