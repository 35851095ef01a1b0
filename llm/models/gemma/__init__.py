"""The Gemma family (Gemma 2, Gemma 3's text model): (1 + w) RMSNorms around attention and the MLP,
sliding-window and global layers, soft-capped attention scores and logits (Gemma 2), per-head q/k norms
(Gemma 3), scaled embeddings, GeGLU. The family interface of llm.models.registry: Block, final_norm,
position_embedding (none: RoPE is applied inside the block), and the HF mapping in `hf`.
"""

from llm.models.gemma.block import Block as Block
from llm.models.gemma.block import final_norm as final_norm
from llm.models.gemma.block import position_embedding as position_embedding
from llm.models.gemma.hf import LORA_TARGETS as LORA_TARGETS
from llm.models.gemma.hf import architectures as architectures
from llm.models.gemma.hf import config_from_hf as config_from_hf
from llm.models.gemma.hf import config_to_hf as config_to_hf
from llm.models.gemma.hf import param_table as param_table
