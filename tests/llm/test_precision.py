"""Mixed precision: float32 master weights and AdamW state with bfloat16 compute train like float32 at the
paper's DPO learning rate, bfloat16 storage (which does not) is refused for training, and the LM head's
bfloat16 matmul accumulates into float32 logits without rounding them."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from llm.inference import tokenizer as tok
from llm.models import hf_io
from llm.training import config as C
from llm.training import data, trainers
from llm.training.loop import train


def moved_weights(assets, out, param_dtype, compute_dtype):
  """(share of weights that changed, mean |change|) after 5 AdamW steps of SFT at learning rate 1e-6."""
  model, _ = hf_io.load_hf_checkpoint(assets["policy"], dtype=compute_dtype, param_dtype=param_dtype)
  tokenizer = tok.load_tokenizer(assets["policy"])
  examples, _ = data.load_examples(assets["train"], "sft")
  arrays = data.tokenize_sft(tokenizer, examples, 64, 64)
  flat = lambda: np.concatenate([np.asarray(x, np.float32).ravel() for x in jax.tree.leaves(nnx.state(model, nnx.Param))])
  before = flat()
  config = C.load_config("sft", None, ["train.batch_size=8", "train.progress=false", "train.tensorboard=false"]).train
  train(model, trainers.sft_loss, arrays, dataclasses.replace(config, learning_rate=1e-6, max_steps=5, warmup_ratio=0.0),
        str(out))
  change = np.abs(flat() - before)
  return float((change > 0).mean()), float(change.mean())


def test_bf16_compute_with_float32_master_weights_moves_like_float32(assets, tmp_path):
  f32 = moved_weights(assets, tmp_path / "f32", "float32", "float32")
  mixed = moved_weights(assets, tmp_path / "mixed", "float32", "bfloat16")
  stored_bf16 = moved_weights(assets, tmp_path / "bf16", "bfloat16", "bfloat16")
  # every weight with a gradient moves (embedding rows of tokens the batches never show do not)
  assert f32[0] > 0.5 and abs(mixed[0] - f32[0]) < 0.02, (f32, mixed)
  assert 0.5 < mixed[1] / f32[1] < 2.0, (f32, mixed)
  assert stored_bf16[0] < 0.2 * f32[0], stored_bf16  # updates of ~1e-6 are below bf16's resolution


def test_training_with_bf16_parameter_storage_is_refused():
  for command in ("sft", "reward", "dpo", "rso", "hybrid"):
    with pytest.raises(ValueError, match=f"^{command} trains, and model.param_dtype=bfloat16 has no float32 master"):
      C.load_config(command, None, ["model.param_dtype=bfloat16"])
  for command in ("sample", "label", "evaluate"):
    assert C.load_config(command, None, ["model.param_dtype=bfloat16"]).model.param_dtype == "bfloat16"


def test_bf16_lm_head_accumulates_in_float32(assets):
  model, config = hf_io.load_hf_checkpoint(assets["policy"], dtype="bfloat16")
  hidden = jax.random.normal(jax.random.key(0), (3, 5, config.hidden_size)).astype(jnp.bfloat16)
  logits = model.logits(hidden)
  assert logits.dtype == jnp.float32
  weight = model.embed.embedding[...].T if config.tie_word_embeddings else model.lm_head.kernel[...]
  exact = np.asarray(hidden, np.float64) @ np.asarray(weight.astype(jnp.bfloat16), np.float64)
  # bf16 products are exact in float32; only the float32 summation differs (rounding to bf16 would be ~4e-3)
  np.testing.assert_allclose(np.asarray(logits), exact, rtol=1e-5, atol=1e-6)
