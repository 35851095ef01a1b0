"""Inference: tokenizers (tokenizer), sampling with a KV cache (sampling), and per-token / per-sequence
log-probabilities and reward scores (logprobs)."""
