"""The training step (llm.training.step) against optax: gradient accumulation, clipping, AdamW with weight
decay and the cosine schedule; and one traced step shared by runs that differ in their hyperparameters."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import transformers
from flax import nnx

from llm.models import config as model_config
from llm.models.transformer import init_model
from llm.training import config as C
from llm.training import step as train_step
from llm.training import trainers


def tiny_model():
  return init_model(model_config.from_hf(transformers.LlamaConfig(
      vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
      num_key_value_heads=1)))


def test_steps_equal_optax_adamw_with_clipping_on_the_accumulated_gradient():
  graphdef, params, frozen = nnx.split(tiny_model(), nnx.Param, ...)
  rng = np.random.default_rng(0)
  batch = {"input_ids": rng.integers(0, 64, (2, 3, 10)).astype(np.int32),  # 2 micro-batches of 3 rows
           "attention_mask": np.ones((2, 3, 10), np.int32)}
  batch["attention_mask"][1, :, 6:] = 0
  schedule = train_step.cosine_schedule(3e-2, 4, warmup_ratio=0.25)
  reference = optax.chain(optax.clip_by_global_norm(0.05), optax.adamw(schedule, weight_decay=0.1))
  expected, ref_state = params, reference.init(params)

  def mean_loss(p):
    model = nnx.merge(graphdef, p, frozen)
    return jnp.mean(jnp.stack([train_step.next_token_loss(model, jax.tree.map(lambda x: x[a], batch))[0]
                               for a in range(2)]))

  step = train_step.make_train_step()
  got, opt_state = jax.tree.map(jnp.copy, params), train_step.init_optimizer_state(params)
  @jax.jit
  def reference_step(p, state):
    loss, grads = jax.value_and_grad(mean_loss)(p)
    updates, state = reference.update(grads, state, p)
    return optax.apply_updates(p, updates), state, loss, optax.tree.norm(grads)

  for k in range(4):
    expected, ref_state, loss, norm = reference_step(expected, ref_state)
    hparams = train_step.hyperparameters(schedule(k), weight_decay=0.1, max_grad_norm=0.05)
    got, opt_state, metrics = step(graphdef, train_step.next_token_loss, got, frozen, opt_state, batch, hparams)
    assert float(metrics["loss"]) == pytest.approx(float(loss), rel=1e-6)
    assert float(metrics["grad_norm"]) == pytest.approx(float(norm), rel=1e-5)
    assert float(metrics["grad_norm"]) > 0.05  # so the clipping acts
  for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(expected)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
  assert max(float(jnp.abs(a - b).max()) for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(params))) > 1e-2


TRACED = []


def counted_loss(model, batch):
  TRACED.append(1)  # runs only while the step is traced
  return train_step.next_token_loss(model, batch)


def test_runs_with_other_hyperparameters_and_models_reuse_one_traced_step():
  rng = np.random.default_rng(1)
  batch = {"input_ids": rng.integers(0, 64, (1, 2, 8)).astype(np.int32), "attention_mask": np.ones((1, 2, 8), np.int32)}
  traces = []
  for seed, lr in ((0, 1e-3), (1, 5e-2)):  # two runs: a new model, a new jitted step, other settings
    model = init_model(tiny_model().config, seed=seed)
    graphdef, params, frozen = nnx.split(model, nnx.Param, ...)
    step = train_step.make_train_step()
    opt_state = train_step.init_optimizer_state(params)
    for k in range(2):
      hparams = train_step.hyperparameters(lr * (k + 1), weight_decay=0.01 * seed, max_grad_norm=seed)
      params, opt_state, _ = step(graphdef, counted_loss, params, frozen, opt_state, batch, hparams)
    traces.append(len(TRACED))
  assert traces[0] > 0 and traces[1] == traces[0]


def test_dpo_losses_compare_by_their_settings():
  dpo = C.load_config("dpo")
  same = C.load_config("dpo", None, ["dpo.reward_ensemble=elsewhere", "train.learning_rate=1e-3"])
  assert trainers.make_dpo_loss(dpo.dpo) == trainers.make_dpo_loss(same.dpo)
  assert hash(trainers.make_dpo_loss(dpo.dpo)) == hash(trainers.make_dpo_loss(same.dpo))
  for change in ("dpo.beta=0.5", "dpo.loss=hinge", "dpo.label_smoothing=0.1", "dpo.uncertainty_coef=0.5,dpo.reward_ensemble=x"):
    assert trainers.make_dpo_loss(C.load_config("dpo", None, change.split(",")).dpo) != trainers.make_dpo_loss(dpo.dpo), change
