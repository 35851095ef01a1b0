"""llm: the LLM half of gshf-jax (Flax NNX models, HF checkpoint I/O, trainers, the paper's pipelines).

Not built yet: the model, trainer and pipeline layers are tracked as separate issues. It depends on
gshf_jax only (see DESIGN.md).
"""
