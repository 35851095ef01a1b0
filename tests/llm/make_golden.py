"""Writes tests/llm/golden/: tiny HF checkpoints (safetensors) made with transformers' PyTorch models and
the logits PyTorch computes for a fixed padded batch, so the core parity test runs without torch.

Run from the repository root (needs torch): python tests/llm/make_golden.py
"""

import os

import numpy as np
import torch
import transformers
from safetensors.numpy import save_file

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "golden")
CONFIGS = {
    "llama3": transformers.LlamaConfig(
        vocab_size=61, hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, pad_token_id=0, attention_bias=True,
        rope_parameters={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                         "original_max_position_embeddings": 8, "rope_theta": 500000.0}),
    "gpt2": transformers.GPT2Config(vocab_size=61, n_embd=16, n_layer=2, n_head=2, n_positions=32, bos_token_id=0,
                                    eos_token_id=0, pad_token_id=0),
}


def main():
  rng = np.random.default_rng(0)
  ids = rng.integers(1, 61, (3, 7))
  mask = np.ones_like(ids)
  mask[1, :2] = 0  # left padding
  mask[2, -2:] = 0  # right padding
  ids = np.where(mask == 1, ids, 0)
  positions = np.maximum(np.cumsum(mask, -1) - 1, 0)
  for name, config in CONFIGS.items():
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(config, attn_implementation="eager").eval()
    with torch.no_grad():
      for param_name, param in model.named_parameters():
        if param_name.endswith("bias") or "norm" in param_name or "ln_" in param_name:
          param.add_(0.1 * torch.randn_like(param))
      logits = model(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask),
                     position_ids=torch.tensor(positions)).logits.numpy()
    folder = os.path.join(HERE, name)
    model.save_pretrained(folder)
    save_file({"input_ids": ids.astype(np.int32), "attention_mask": mask.astype(np.int32),
               "logits": logits.astype(np.float32)}, os.path.join(folder, "expected.safetensors"))
    print("wrote", folder)


if __name__ == "__main__":
  main()
