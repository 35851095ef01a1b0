"""The model-family registry: Hugging Face `model_type` -> the family package that implements it.

A family package (one folder under llm/models/) exports Block, final_norm, position_embedding,
architectures, config_from_hf, config_to_hf and param_table (see llm/models/llama/__init__.py). Adding a
family is that folder plus one line here.
"""

from types import ModuleType

from llm.models import gemma, gpt2, llama

FAMILIES: dict[str, ModuleType] = {
    "llama": llama,
    "mistral": llama,
    "qwen2": llama,
    "qwen3": llama,
    "gemma2": gemma,
    "gemma3_text": gemma,
    "gpt2": gpt2,
}


def family(model_type: str) -> ModuleType:
  """The family package of an HF model_type; ValueError naming the supported ones otherwise."""
  if model_type not in FAMILIES:
    raise ValueError(f"unsupported model_type {model_type!r}; supported: {sorted(FAMILIES)}")
  return FAMILIES[model_type]
