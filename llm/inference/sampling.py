"""Sampling from a causal LM: one jitted function that prefills the KV cache with the (left-padded)
prompts and decodes with `lax.scan`, the cache updated in place as the loop carry.

Temperature, top-k, top-p (nucleus) and stop tokens; n samples per prompt; temperature 0 is greedy.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from llm.models import attention, transformer


class Samples(NamedTuple):
  tokens: jax.Array  # [B * n, N] generated tokens (pad_id after a stop token)
  mask: jax.Array  # [B * n, N] 1 on generated tokens, the stop token included
  logprobs: jax.Array  # [B * n, N] log-probability of each token under the sampling distribution
  prompt_index: jax.Array  # [B * n] which prompt each row continues
  stopped: jax.Array  # [B * n] bool: ended with a stop token (False: cut at max_new_tokens)


def filter_logits(logits, *, temperature, top_k, top_p):
  """Logits [..., V] of the sampling distribution: divided by temperature, all but the top_k largest set to
  -inf (top_k = 0: no limit), then all outside the smallest set of probability >= top_p (top_p = 1: no
  limit; the most likely token always stays). temperature and top_p may be traced (a traced top_p always
  filters); top_k is static."""
  logits = logits.astype(jnp.float32) / temperature
  if top_k:
    kth = jax.lax.top_k(logits, top_k)[0][..., -1:]
    logits = jnp.where(logits < kth, -jnp.inf, logits)
  if not isinstance(top_p, (int, float)) or top_p < 1.0:
    sorted_logits = jnp.sort(logits, axis=-1)[..., ::-1]
    probs = jax.nn.softmax(sorted_logits, axis=-1)
    before = jnp.cumsum(probs, axis=-1) - probs  # mass of strictly more likely tokens
    cutoff = jnp.min(jnp.where(before < top_p, sorted_logits, jnp.inf), axis=-1, keepdims=True)
    logits = jnp.where(logits < cutoff, -jnp.inf, logits)
  return logits


def check_left_padded(prompt_mask):
  mask = np.asarray(prompt_mask).astype(bool)
  if mask.ndim != 2 or not mask[:, -1].all() or np.any(mask[:, 1:] < mask[:, :-1]):
    raise ValueError("prompt_mask must be [B, P] with left padding (each row 0...0 1...1, ending in a real "
                     "token)")


def generate(model, prompt_ids, prompt_mask, key, *, max_new_tokens, temperature=1.0, top_k=0, top_p=1.0,
             stop_tokens=(), num_samples=1, pad_id=0):
  """Samples continuations of left-padded prompts.

  Args:
    model: llm.models.transformer.Transformer (causal LM).
    prompt_ids, prompt_mask: [B, P] left-padded prompts.
    key: PRNG key.
    max_new_tokens: N, static.
    temperature: > 0, or 0 for greedy decoding.
    top_k: keep the k most likely tokens (0: all).
    top_p: nucleus mass in (0, 1].
    stop_tokens: token ids that end a sequence (included in the output, nothing after them).
    num_samples: n continuations per prompt (rows b * n .. b * n + n - 1 continue prompt b).
    pad_id: token written after a stop.

  Returns:
    Samples. Decoding is one while loop (one compilation) that ends as soon as every row has stopped.
  """
  check_left_padded(prompt_mask)
  if max_new_tokens < 1 or num_samples < 1:
    raise ValueError(f"max_new_tokens and num_samples must be >= 1, got {max_new_tokens}, {num_samples}")
  if temperature < 0 or not 0 < top_p <= 1 or top_k < 0:
    raise ValueError(f"need temperature >= 0, 0 < top_p <= 1, top_k >= 0; got {temperature}, {top_p}, {top_k}")
  transformer.check_positions(model, int(np.asarray(prompt_mask).sum(1).max()) + max_new_tokens,
                              f"the longest prompt + max_new_tokens {max_new_tokens}")
  graphdef, state = nnx.split(model)
  return generate_jitted(graphdef, state, jnp.asarray(prompt_ids, jnp.int32), jnp.asarray(prompt_mask, bool), key,
                   jnp.float32(temperature or 1.0), jnp.float32(top_p), max_new_tokens=max_new_tokens,
                   greedy=temperature == 0, top_k=int(top_k), nucleus=top_p < 1.0,
                   stop_tokens=tuple(int(t) for t in stop_tokens), num_samples=num_samples, pad_id=pad_id)


# `generate`'s compiled function (llm.training.aot lowers it for a TPU chip). temperature and top_p are
# traced: one compilation serves a temperature sweep
@jax.jit(static_argnames=("max_new_tokens", "greedy", "top_k", "nucleus", "stop_tokens", "num_samples", "pad_id"))
def generate_jitted(graphdef, state, prompt_ids, prompt_mask, key, temperature, top_p, *, max_new_tokens, greedy, top_k,
              nucleus, stop_tokens, num_samples, pad_id):
  model = nnx.merge(graphdef, state)
  prompt_ids = jnp.repeat(prompt_ids, num_samples, axis=0)
  prompt_mask = jnp.repeat(prompt_mask, num_samples, axis=0)
  rows, length = prompt_ids.shape
  cache = attention.init_cache(model.config, rows, length + max_new_tokens)
  hidden, cache = model.hidden_states(prompt_ids, prompt_mask, cache=cache)
  logits = model.logits(hidden[:, -1:])  # only the last prompt position's [rows, 1, V] (a prefill's whole
  # [rows, P, V] in float32 would be the largest array of the program)
  stops = jnp.asarray(stop_tokens or (-1,), jnp.int32)

  keys = jax.random.split(key, max_new_tokens)

  def unfinished(carry):
    i, _, _, done, _ = carry
    return (i < max_new_tokens) & ~jnp.all(done)  # every row stopped: no more decoding steps

  def step(carry):
    i, logits, cache, done, (tokens, mask, logps) = carry  # logits [rows, V] for the next token
    if greedy:
      token = jnp.argmax(logits, axis=-1).astype(jnp.int32)
      logp = jnp.zeros(rows, jnp.float32)
    else:
      filtered = filter_logits(logits, temperature=temperature, top_k=top_k, top_p=top_p if nucleus else 1.0)
      token = jax.random.categorical(keys[i], filtered).astype(jnp.int32)
      logp = jnp.take_along_axis(jax.nn.log_softmax(filtered), token[:, None], axis=-1)[:, 0]
    live = ~done
    token = jnp.where(live, token, pad_id)
    done = done | jnp.isin(token, stops)
    next_logits, cache = model(token[:, None], live[:, None], cache=cache)
    out = (tokens.at[:, i].set(token), mask.at[:, i].set(live.astype(jnp.int32)),
           logps.at[:, i].set(jnp.where(live, logp, 0.0)))
    return i + 1, next_logits[:, -1], cache, done, out

  empty = (jnp.full((rows, max_new_tokens), pad_id, jnp.int32), jnp.zeros((rows, max_new_tokens), jnp.int32),
           jnp.zeros((rows, max_new_tokens), jnp.float32))
  init = (jnp.int32(0), logits[:, -1], cache, jnp.zeros(rows, bool), empty)
  _, _, _, done, (tokens, mask, logps) = jax.lax.while_loop(unfinished, step, init)
  return Samples(tokens, mask, logps, jnp.repeat(jnp.arange(rows // num_samples), num_samples), done)


def stop_ids(model, tokenizer):
  """The token ids that end a response: the tokenizer's eos and every eos id of the model's config.json and
  generation_config.json (Llama-3 chat models list several, e.g. <|end_of_text|> and <|eot_id|>)."""
  ids = {tokenizer.eos_token_id, *model.config.generation_eos_token_ids}
  eos = model.config.eos_token_id
  ids.update(eos if isinstance(eos, tuple) else (eos,))
  return tuple(sorted(i for i in ids if i is not None))


PROMPT_MULTIPLE = 16  # sample_texts pads prompts to a multiple of this many tokens (fewer compiled shapes)


def sample_texts(model, tokenizer, prompts, key, *, num_samples=1, max_new_tokens, temperature=1.0, top_k=0,
                 top_p=1.0, batch_size=32, max_prompt_length=1024):
  """Samples num_samples responses per prompt (strings), batch_size prompts per `generate` call; every
  call has the same shapes (prompts left-padded to the longest rounded up to a multiple of
  PROMPT_MULTIPLE, the last batch filled by repeating a prompt).

  Returns:
    {"responses": [P * n] str (rows p * n .. p * n + n - 1 continue prompt p, stop token removed),
     "prompt_ids", "prompt_mask" [P * n, L], "response_ids", "response_mask" [P * n, N] (the stop token
     included, as llm.inference.logprobs.sequence_logprobs scores it), "lengths" [P * n] generated tokens,
     "stopped" [P * n] bool: the response ended with a stop id (stop_ids) rather than at max_new_tokens}.
  """
  from llm.inference.tokenizer import encode_prompts
  ids, mask = encode_prompts(tokenizer, prompts, max_prompt_length)
  width = ((0, 0), (-ids.shape[1] % PROMPT_MULTIPLE, 0))  # more left padding: prompt sets share shapes
  ids, mask = np.pad(ids, width, constant_values=tokenizer.pad_token_id), np.pad(mask, width)
  stops = stop_ids(model, tokenizer)
  outputs = []
  for i, start in enumerate(range(0, len(prompts), batch_size)):
    index = np.minimum(np.arange(start, start + batch_size), len(prompts) - 1)
    samples = generate(model, ids[index], mask[index], jax.random.fold_in(key, i), max_new_tokens=max_new_tokens,
                       temperature=temperature, top_k=top_k, top_p=top_p, stop_tokens=stops,
                       num_samples=num_samples, pad_id=tokenizer.pad_token_id)
    keep = min(batch_size, len(prompts) - start) * num_samples
    outputs.append([np.asarray(x)[:keep] for x in (samples.tokens, samples.mask, samples.stopped)])
  tokens, response_mask, stopped = (np.concatenate([o[k] for o in outputs]) for k in range(3))
  text_mask = response_mask.astype(bool) & ~np.isin(tokens, stops)
  responses = [tokenizer.decode(row[keep], skip_special_tokens=True) for row, keep in zip(tokens, text_mask)]
  return {"responses": responses, "prompt_ids": np.repeat(ids, num_samples, 0),
          "prompt_mask": np.repeat(mask, num_samples, 0), "response_ids": tokens, "response_mask": response_mask,
          "lengths": text_mask.sum(-1), "stopped": stopped}
