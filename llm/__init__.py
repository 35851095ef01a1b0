"""llm: the LLM half of gshf-jax.

Models and I/O: model_config (ModelConfig <-> HF config.json), model (Transformer), llama / gpt2 (the
family blocks), attention (masks, KV cache), hf_io (safetensors checkpoints), tokenizer, logprobs,
sampling, sharding, distributed, checkpoint (orbax). Training: config (YAML + overrides), data (JSONL),
train_step, train (the loop), trainers (SFT, reward models, DPO family), oracle, evaluate. The paper's
practical algorithms: pipelines, and the built-in task (review_task, builtin). CLI: `python -m llm`
(cli). Depends on gshf_jax only (see DESIGN.md).
"""

from llm.hf_io import load_hf_checkpoint, save_hf_checkpoint
from llm.model import Transformer, init_model
from llm.model_config import ModelConfig
