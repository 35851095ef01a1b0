"""One jitted optimizer step on a (possibly sharded) model, with gradient accumulation: the building block
llm.training.loop's loop runs. The model is split into the params it trains and the frozen rest
(`nnx.split(model, trainable, ...)`: everything, or with LoRA adapters only the adapters); both are pytrees
(nnx.State) with NamedShardings, and only the trained params have optimizer state. The step is `jax.jit`
with in/out shardings and donated params and optimizer state.

A batch is a dict of arrays [A, b, ...]: A micro-batches of b rows (A = gradient-accumulation steps). The
step scans over the micro-batches, averages their gradients and metrics, and applies one update.
"""

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


def make_optimizer(schedule, *, weight_decay=0.0, max_grad_norm=1.0):
  """AdamW with the learning-rate `schedule` (a float or an optax schedule), after global-norm gradient
  clipping (max_grad_norm = 0: none)."""
  adamw = optax.adamw(schedule, weight_decay=weight_decay)
  return optax.chain(optax.clip_by_global_norm(max_grad_norm), adamw) if max_grad_norm else adamw


def make_train_step(graphdef, optimizer, loss_fn=next_token_loss, *, param_shardings=None, frozen_shardings=None,
                    opt_shardings=None, batch_shardings=None):
  """jit(step): (params, frozen, opt_state, batch) -> (params, opt_state, metrics).

  Args:
    graphdef: of `graphdef, params, frozen = nnx.split(model, trainable, ...)` (trainable: nnx.Param to
      train everything; llm.models.lora.trainable(model) in general).
    optimizer: an optax.GradientTransformation.
    loss_fn: (model, micro_batch) -> (scalar loss, {name: scalar}).
    param_shardings, frozen_shardings, opt_shardings, batch_shardings: NamedSharding pytrees matching params,
      frozen, the optimizer state and the batch dict (None: let jit choose, single device).

  Returns metrics {"loss", "grad_norm" (before clipping), **loss_fn's metrics}, averaged over micro-batches.
  """
  def step(params, frozen, opt_state, batch):
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
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, {**metrics, "grad_norm": optax.tree.norm(grads)}

  if param_shardings is None:
    return jax.jit(step, donate_argnums=(0, 2))
  return jax.jit(step, in_shardings=(param_shardings, frozen_shardings, opt_shardings, batch_shardings),
                 out_shardings=(param_shardings, opt_shardings, None), donate_argnums=(0, 2))


def make_eval_step(graphdef, loss_fn):
  """jit((params, frozen, micro_batch) -> (loss, metrics)) without gradients."""
  return jax.jit(lambda params, frozen, micro: loss_fn(nnx.merge(graphdef, params, frozen), micro))


def init_optimizer_state(optimizer, params):
  """optimizer.init(params), jitted so every moment is placed like its parameter."""
  return jax.jit(optimizer.init)(params)
