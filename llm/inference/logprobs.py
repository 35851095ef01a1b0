"""Per-token and per-sequence log-probabilities of responses under a causal LM, without materializing
float32 logits [B, T, V] for the whole batch: the hidden states are computed once and the LM head and
log p(y) = logits[y] - logsumexp(logits) run over chunks of `chunk` positions (rematerialized in the
backward pass), so peak memory is O(B * chunk * V) for the logits.
"""

import jax
import jax.numpy as jnp
from flax import nnx

LM_HEAD_CHUNK = 256  # positions per LM-head chunk


def token_logprobs(model, input_ids, attention_mask, *, chunk=LM_HEAD_CHUNK):
  """log pi(input_ids[:, t] | input_ids[:, :t]) for t >= 1, [B, T] float32 (column 0 is 0).

  Args:
    model: llm.models.transformer.Transformer (a causal LM).
    input_ids: [B, T] int32.
    attention_mask: [B, T] (1 for real tokens).
    chunk: positions per LM-head chunk (static).
  """
  hidden = model.hidden_states(input_ids, attention_mask)[:, :-1]  # predicts tokens 1..T-1
  targets = input_ids[:, 1:]
  b, t, e = hidden.shape

  def one_chunk(h_and_y):
    h, y = h_and_y  # [B, C, E], [B, C]
    logits = model.logits(h).astype(jnp.float32)  # [B, C, V]
    # logits[y] as a select and a sum: its gradient fuses with logsumexp's (take_along_axis's is a scatter)
    target = jnp.sum(jnp.where(jnp.arange(logits.shape[-1], dtype=y.dtype) == y[..., None], logits, 0.0), -1)
    return target - jax.nn.logsumexp(logits, axis=-1)

  if t <= chunk:  # one chunk: no loop and no recomputation in the backward pass
    return jnp.pad(one_chunk((hidden, targets)), ((0, 0), (1, 0)))
  pad = -t % chunk
  hidden = jnp.pad(hidden, ((0, 0), (0, pad), (0, 0)))
  targets = jnp.pad(targets, ((0, 0), (0, pad)))
  n = hidden.shape[1] // chunk
  one_chunk = jax.checkpoint(one_chunk)
  chunks = (hidden.reshape(b, n, chunk, e).swapaxes(0, 1), targets.reshape(b, n, chunk).swapaxes(0, 1))
  logp = jax.lax.map(one_chunk, chunks).swapaxes(0, 1).reshape(b, n * chunk)[:, :t]
  return jnp.pad(logp, ((0, 0), (1, 0)))


def concat_prompt_response(prompt_ids, prompt_mask, response_ids, response_mask):
  """[left-padded prompt | right-padded response] -> (input_ids [B, P+R], attention_mask, loss_mask) with
  loss_mask 1 exactly on the response's real tokens."""
  input_ids = jnp.concatenate([prompt_ids, response_ids], axis=1)
  attention_mask = jnp.concatenate([prompt_mask, response_mask], axis=1).astype(jnp.int32)
  loss_mask = jnp.concatenate([jnp.zeros_like(prompt_mask), response_mask], axis=1).astype(jnp.int32)
  return input_ids, attention_mask, loss_mask


def sequence_logprobs(model, prompt_ids, prompt_mask, response_ids, response_mask, *, chunk=LM_HEAD_CHUNK):
  """log pi(response | prompt) = sum over the response's real tokens, [B] float32, and the per-token
  values [B, R] (0 on padding): what the DPO losses of gshf_jax.losses take."""
  input_ids, attention_mask, loss_mask = concat_prompt_response(prompt_ids, prompt_mask, response_ids,
                                                                response_mask)
  per_token = token_logprobs(model, input_ids, attention_mask, chunk=chunk) * loss_mask
  return per_token.sum(-1), per_token[:, prompt_ids.shape[1]:]


def reward_scores(model, prompt_ids, prompt_mask, response_ids, response_mask):
  """r(x, y) [B] float32 of a scalar-head model (config.num_labels = 1) on prompt + response: the score
  at the response's last real token that is not the pad id (transformers' *ForSequenceClassification rule;
  training and scoring read the same position)."""
  input_ids, attention_mask, _ = concat_prompt_response(prompt_ids, prompt_mask, response_ids, response_mask)
  return model(input_ids, attention_mask)[:, 0].astype(jnp.float32)


# Batch scorers for map_batches, jitted once here: every call with the same model shape and batch shapes,
# from any model instance, reuses one traced and compiled program.


@nnx.jit
def batch_logprobs(model, batch):
  """sequence_logprobs' totals [B] of a batch {"prompt_ids", "prompt_mask", "response_ids", "response_mask"}."""
  return sequence_logprobs(model, batch["prompt_ids"], batch["prompt_mask"], batch["response_ids"],
                           batch["response_mask"])[0]


@nnx.jit
def batch_rewards(model, batch):
  """reward_scores [B] of a batch {"prompt_ids", "prompt_mask", "response_ids", "response_mask"}."""
  return reward_scores(model, batch["prompt_ids"], batch["prompt_mask"], batch["response_ids"], batch["response_mask"])
