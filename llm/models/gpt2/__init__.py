"""The GPT-2 family: pre-LayerNorm, fused causal self-attention, gelu_new MLP, learned absolute position
embeddings. The family interface of llm.models.registry: Block, final_norm, position_embedding, and the
HF mapping in `hf` (config fields, architectures, tensor names).
"""

from llm.models.gpt2.block import Block as Block
from llm.models.gpt2.block import final_norm as final_norm
from llm.models.gpt2.block import position_embedding as position_embedding
from llm.models.gpt2.hf import LORA_TARGETS as LORA_TARGETS
from llm.models.gpt2.hf import architectures as architectures
from llm.models.gpt2.hf import config_from_hf as config_from_hf
from llm.models.gpt2.hf import config_to_hf as config_to_hf
from llm.models.gpt2.hf import param_table as param_table
