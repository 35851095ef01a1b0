"""The Llama family (Llama 2/3, Mistral, Qwen2, Qwen3): RMSNorm, rotary attention with grouped-query heads,
SwiGLU MLP. The family interface of llm.models.registry: Block, final_norm, position_embedding (none:
RoPE is applied inside the block), and the HF mapping in `hf` (config fields, architectures, tensor names).
"""

from llm.models.llama.block import Block as Block
from llm.models.llama.block import final_norm as final_norm
from llm.models.llama.block import position_embedding as position_embedding
from llm.models.llama.hf import LORA_TARGETS as LORA_TARGETS
from llm.models.llama.hf import architectures as architectures
from llm.models.llama.hf import config_from_hf as config_from_hf
from llm.models.llama.hf import config_to_hf as config_to_hf
from llm.models.llama.hf import param_table as param_table
