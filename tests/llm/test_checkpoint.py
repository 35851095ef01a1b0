"""orbax train-state checkpoints: exact round trip of params, optimizer state, step, RNG and data position;
max_to_keep; nothing to restore; no temporary folders left behind."""

import os

import jax
import jax.numpy as jnp
import transformers
from flax import nnx

from llm.models import config as model_config
from llm.models.transformer import init_model
from llm.training import checkpoint
from llm.training import step as train_step


def test_round_trip_and_max_to_keep(tmp_path):
  config = model_config.from_hf(transformers.LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32,
                                                         num_hidden_layers=1, num_attention_heads=2,
                                                         num_key_value_heads=1))
  _, params = nnx.split(init_model(config), nnx.Param)
  opt_state = train_step.init_optimizer_state(params)
  mngr = checkpoint.manager(str(tmp_path / "ckpt"), max_to_keep=2)
  like = checkpoint.TrainState(params, opt_state, 0, jax.random.key(0), 0)
  assert checkpoint.restore(mngr, like) is None
  for step in (1, 2, 3):
    params = jax.tree.map(lambda x: x + 1.0, params)
    assert checkpoint.save(mngr, checkpoint.TrainState(params, opt_state, step, jax.random.key(step), 8 * step))
  assert mngr.all_steps() == [2, 3]
  assert sorted(os.listdir(tmp_path / "ckpt")) == ["2", "3"]
  restored = checkpoint.restore(mngr, like)
  assert (restored.step, restored.data_position) == (3, 24)
  assert jnp.array_equal(jax.random.key_data(restored.rng), jax.random.key_data(jax.random.key(3)))
  assert jax.tree.structure(restored.params) == jax.tree.structure(params)
  for a, b in zip(jax.tree.leaves((params, opt_state)), jax.tree.leaves((restored.params, restored.opt_state))):
    assert jnp.array_equal(a, b)
  assert checkpoint.restore(mngr, like, step=2).data_position == 16
