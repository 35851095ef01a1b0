"""One jitted optimizer step on a (possibly sharded) model, with gradient accumulation: the building block
llm.training.loop's loop runs. The model is split into the params it trains and the frozen rest
(`nnx.split(model, trainable, ...)`: everything, or with LoRA adapters only the adapters); both are pytrees
(nnx.State) with NamedShardings, and only the trained params have optimizer state. The step is `jax.jit`
with in/out shardings and donated params and optimizer state.

A batch is a dict of arrays [A, b, ...]: A micro-batches of b rows (A = gradient-accumulation steps). The
step scans over the micro-batches, averages their gradients and metrics, and applies one update.

The optimizer's hyperparameters (learning rate, weight decay, clipping norm) are arguments of the step, not
constants in it, and the step is one module-level function whose static arguments (the model's graphdef and
the loss function) compare by value: every run of the same model shape and loss, whatever its learning rate
or schedule, reuses one traced and compiled step.
"""

import functools

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from llm.inference import logprobs


def next_token_loss(model, batch):
  """Mean negative log-likelihood of every real token after the first of each row (language modelling
  with no prompt mask). batch: {"input_ids", "attention_mask"} [b, T]."""
  mask = batch["attention_mask"]
  logp = logprobs.token_logprobs(model, batch["input_ids"], mask)
  targets = mask[:, 1:] * mask[:, :-1]
  loss = -(logp[:, 1:] * targets).sum() / jnp.maximum(targets.sum(), 1)
  return loss, {}


def cosine_schedule(learning_rate, total_steps, warmup_ratio=0.03):
  """Linear warm-up from 0 over warmup_ratio of the steps, then cosine decay to 0 (Tables 8 and 9: "cosine
  decay with 0.03 warm-up"); schedule(k) is the learning rate of update k (0-based)."""
  warmup = int(warmup_ratio * total_steps)
  return optax.warmup_cosine_decay_schedule(0.0, learning_rate, warmup, max(total_steps, warmup + 1))


def hyperparameters(learning_rate, *, weight_decay=0.0, max_grad_norm=1.0):
  """The optimizer's settings for one step, {"learning_rate", "weight_decay", "max_grad_norm"} (max_grad_norm
  = 0: no clipping), as the step takes them: Python floats, which jit traces as weakly typed scalars, so
  bfloat16 parameters get bfloat16 updates as with constant hyperparameters."""
  values = {"learning_rate": learning_rate, "weight_decay": weight_decay, "max_grad_norm": max_grad_norm}
  return {k: float(v) for k, v in values.items()}


def adamw(hparams):
  """optax.adamw after optax.clip_by_global_norm, from hyperparameters(...) (which may be traced)."""
  clip = jnp.where(hparams["max_grad_norm"] > 0, hparams["max_grad_norm"], jnp.inf)
  return optax.chain(optax.clip_by_global_norm(clip),
                     optax.adamw(hparams["learning_rate"], weight_decay=hparams["weight_decay"]))


def init_optimizer_state(params):
  """The AdamW state of `params` (moments at zero), jitted so every moment is placed like its parameter."""
  return jax.jit(adamw(hyperparameters(0.0)).init)(params)


def train_step(graphdef, loss_fn, params, frozen, opt_state, batch, hparams):
  """(params, opt_state, metrics) after one AdamW update (`hparams`: hyperparameters(...)) on the mean
  gradient of loss_fn over the micro-batches of `batch`; metrics {"loss", "grad_norm" (before clipping),
  **loss_fn's metrics}, averaged over micro-batches."""
  def loss_of(params, micro):
    return loss_fn(nnx.merge(graphdef, params, frozen), micro)

  grad_fn = jax.value_and_grad(loss_of, has_aux=True)

  def accumulate(total, micro):
    (loss, metrics), grads = grad_fn(params, micro)
    return jax.tree.map(jnp.add, total, (grads, {"loss": loss, **metrics})), None

  shape = jax.eval_shape(grad_fn, params, jax.tree.map(lambda x: x[0], batch))
  zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), (shape[1], {"loss": shape[0][0], **shape[0][1]}))
  total, _ = jax.lax.scan(accumulate, zeros, batch)
  count = next(iter(batch.values())).shape[0]
  grads, metrics = jax.tree.map(lambda x: x / count, total)
  updates, opt_state = adamw(hparams).update(grads, opt_state, params)
  return optax.apply_updates(params, updates), opt_state, {**metrics, "grad_norm": optax.tree.norm(grads)}


def make_train_step(*, param_shardings=None, frozen_shardings=None, opt_shardings=None, batch_shardings=None):
  """jax.jit(train_step): (graphdef, loss_fn, params, frozen, opt_state, batch, hparams) -> (params,
  opt_state, metrics), with params and optimizer state donated.

  graphdef and loss_fn are static: graphdef of `graphdef, params, frozen = nnx.split(model, trainable, ...)`
  (trainable: nnx.Param to train everything; llm.models.lora.trainable(model) in general), loss_fn
  (model, micro_batch) -> (scalar loss, {name: scalar}), hashable and equal for equal losses (a module-level
  function, or a frozen dataclass such as llm.training.trainers.DPOLoss): runs share the compiled step by them.
  param_shardings, frozen_shardings, opt_shardings, batch_shardings: NamedSharding pytrees matching params,
  frozen, the optimizer state and the batch dict (None: let jit choose, single device).
  """
  if param_shardings is None:
    return jax.jit(train_step, static_argnums=(0, 1), donate_argnums=(2, 4))
  return jax.jit(train_step, static_argnums=(0, 1), donate_argnums=(2, 4),
                 in_shardings=(param_shardings, frozen_shardings, opt_shardings, batch_shardings, None),
                 out_shardings=(param_shardings, opt_shardings, None))


@functools.partial(jax.jit, static_argnums=(0, 1))
def eval_loss(graphdef, loss_fn, params, frozen, micro):
  """loss_fn of the model (graphdef, params, frozen) on one micro-batch, without gradients."""
  return loss_fn(nnx.merge(graphdef, params, frozen), micro)
