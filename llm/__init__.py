"""llm: the LLM half of gshf-jax (Flax NNX models, HF checkpoint I/O, log-probs, sampling).

Modules: model_config (ModelConfig <-> HF config.json), model (Transformer), llama / gpt2 (the family
blocks), attention (masks, KV cache), hf_io (safetensors checkpoints), logprobs, sampling. Trainers and
the paper's pipelines are separate issues. Depends on gshf_jax only (see DESIGN.md).
"""

from llm.hf_io import load_hf_checkpoint, save_hf_checkpoint
from llm.model import Transformer, init_model
from llm.model_config import ModelConfig
