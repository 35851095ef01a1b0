"""llm: the LLM half of gshf-jax, in subpackages by role (see docs/architecture.md):

  models/      ModelConfig, layers, attention, Transformer, one folder per family, HF checkpoint I/O
  inference/   tokenizer, sampling, log-probs
  parallel/    mesh and sharding rules, multi-process
  training/    config, data, train step, loop, checkpoints, trainers (SFT, reward, DPO family)
  preference/  oracles, evaluation, the sample / label / evaluate stages, the paper's pipelines
  builtin/     the built-in task of `python -m llm`
  cli          the command line

Depends on gshf_jax (formulas, losses) only.
"""

from llm.models import ModelConfig as ModelConfig
from llm.models import Transformer as Transformer
from llm.models import init_model as init_model
from llm.models import load_hf_checkpoint as load_hf_checkpoint
from llm.models import save_hf_checkpoint as save_hf_checkpoint
