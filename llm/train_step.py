"""One jitted optimizer step on a (possibly sharded) model: the building block the trainers' loop
(a separate issue) runs. Params and optimizer state are pytrees (nnx.State) with NamedShardings; the
step is `jax.jit` with in/out shardings and donated params and optimizer state.
"""

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from llm import logprobs


def next_token_loss(model, input_ids, attention_mask):
  """Mean negative log-likelihood of every real token after the first of each row (SFT's loss with no
  prompt mask)."""
  logp = logprobs.token_logprobs(model, input_ids, attention_mask)
  targets = attention_mask[:, 1:] * attention_mask[:, :-1]
  return -(logp[:, 1:] * targets).sum() / jnp.maximum(targets.sum(), 1)


def make_train_step(graphdef, optimizer, loss_fn=next_token_loss, *, param_shardings=None,
                    opt_shardings=None, batch_shardings=None):
  """jit(step): (params, opt_state, batch) -> (params, opt_state, loss), with `loss_fn(model, *batch)`.

  Args:
    graphdef: nnx.split(model)[0].
    optimizer: an optax.GradientTransformation.
    loss_fn: scalar loss of (model, *batch).
    param_shardings, opt_shardings, batch_shardings: pytrees of NamedSharding matching params, the
      optimizer state and the batch tuple (None: let jit choose, single device).
  """
  def step(params, opt_state, batch):
    def loss_of(params):
      return loss_fn(nnx.merge(graphdef, params), *batch)

    loss, grads = jax.value_and_grad(loss_of)(params)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  if param_shardings is None:
    return jax.jit(step, donate_argnums=(0, 1))
  return jax.jit(step, in_shardings=(param_shardings, opt_shardings, batch_shardings),
                 out_shardings=(param_shardings, opt_shardings, None), donate_argnums=(0, 1))


def init_optimizer_state(optimizer, params):
  """optimizer.init(params), jitted so every moment is placed like its parameter."""
  return jax.jit(optimizer.init)(params)
