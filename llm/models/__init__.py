"""Models: ModelConfig (config), shared layers and attention, the Transformer, one folder per family
(llama/, gpt2/) behind `registry`, and HF safetensors checkpoint I/O (hf_io). Imports nothing from
llm.training or llm.preference."""

from llm.models.config import ModelConfig as ModelConfig
from llm.models.hf_io import load_hf_checkpoint as load_hf_checkpoint
from llm.models.hf_io import save_hf_checkpoint as save_hf_checkpoint
from llm.models.transformer import Transformer as Transformer
from llm.models.transformer import init_model as init_model
from llm.models.transformer import param_count as param_count
