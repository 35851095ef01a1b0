"""Attention shared by the model families: masks from padding, causality and a sliding window, an
explicit KV cache for decoding, and the attention itself: `jax.nn.dot_product_attention` on accelerators,
`grouped_attention` in causal query blocks on CPU (see `attend`).

Shapes: B batch, T new tokens, S key slots (T without a cache, the cache length with one), N query heads,
K key/value heads (N % K == 0, grouped-query attention), H head dim, L layers.
"""

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp

from llm.models import splash
from llm.models.layers import soft_cap


class KVCache(NamedTuple):
  """Keys and values of every layer for S slots, filled left to right (prompts are left-padded, so every
  sequence of the batch writes the same slot at each step). One buffer per layer: each layer writes its
  new keys into its own buffer, which XLA updates in place inside the decoding loop; scanned layers
  (config.scan_layers) scan over one stacked [L, ...] buffer instead."""
  key: tuple | jax.Array  # L arrays [B, S, K, H], or one [L, B, S, K, H] with scanned layers
  value: tuple | jax.Array
  valid: jax.Array  # [B, S] bool: the slot holds a real (non-padding) token
  positions: jax.Array  # [B, S] int32 position of the token in each slot
  index: jax.Array  # scalar int32: the next slot to write


def _at(*index):
  """dynamic_update_slice start indices, all int32 (Python ints would be int64 under jax_enable_x64)."""
  return tuple(jnp.asarray(i, jnp.int32) for i in index)


def init_cache(config, batch, length, dtype=None):
  """An empty KVCache with `length` slots (stacked buffers for config.scan_layers)."""
  shape = (batch, length, config.num_kv_heads, config.head_dim)
  dtype = config.compute_dtype if dtype is None else dtype
  if config.scan_layers:
    key, value = (jnp.zeros((config.num_layers, *shape), dtype) for _ in range(2))
  else:
    key, value = (tuple(jnp.zeros(shape, dtype) for _ in range(config.num_layers)) for _ in range(2))
  return KVCache(key, value, jnp.zeros((batch, length), bool), jnp.zeros((batch, length), jnp.int32),
                 jnp.zeros((), jnp.int32))


def positions_from_mask(attention_mask):
  """Token positions counting only real tokens: cumsum(mask) - 1, clipped at 0, [B, T] (so a
  left-padded prompt starts at position 0, as transformers' generate does)."""
  return jnp.maximum(jnp.cumsum(attention_mask.astype(jnp.int32), axis=-1, dtype=jnp.int32) - 1, 0)


def attention_mask_4d(q_positions, k_positions, k_valid, q_slots, k_slots, window):
  """[B, 1, T, S] bool: key s is visible to query t iff it is a real token, not after t (slot order),
  and, with a sliding window w, q_position - k_position < w."""
  visible = (k_slots[None, None, :] <= q_slots[None, :, None]) & k_valid[:, None, :]
  if window is not None:
    visible &= (q_positions[:, :, None] - k_positions[:, None, :]) < window
  return visible[:, None]


def grouped_attention(q, k, v, mask, scale, softcap=None):
  """softmax(q k^T * scale + mask) v with each key/value head shared by its G = N / K query heads,
  computed in the layout [B, K, G, T, H] x [B, K, S, H] (batch dimensions leading, as XLA's CPU matmuls
  want them) with float32 (or wider) scores, and normalized after the value product:
  o = (e v) / sum(e), e = exp(s - max s). Shapes as in `attend`."""
  b, t, n, h = q.shape
  kv_heads = k.shape[2]
  q = (q * scale).reshape(b, t, kv_heads, n // kv_heads, h).transpose(0, 2, 3, 1, 4)  # [B, K, G, T, H]
  k, v = k.transpose(0, 2, 1, 3), v.transpose(0, 2, 1, 3)  # [B, K, S, H]
  score_dtype = jnp.promote_types(q.dtype, jnp.float32)
  scores = jnp.einsum("bkgth,bksh->bkgts", q, k, preferred_element_type=score_dtype)
  if softcap is not None:  # Gemma 2: scores squashed into (-softcap, softcap) before the mask
    scores = soft_cap(scores, softcap)
  scores = jnp.where(mask[:, :, None], scores, jnp.finfo(score_dtype).min)  # mask [B, 1, T, S]
  e = jnp.exp(scores - jax.lax.stop_gradient(scores.max(-1, keepdims=True)))
  out = jnp.einsum("bkgts,bksh->bkgth", e.astype(v.dtype), v) / e.sum(-1, keepdims=True).astype(v.dtype)
  return out.transpose(0, 3, 1, 2, 4).reshape(b, t, n, h)


def causal_blocks_attention(q, k, v, mask, scale, softcap=None, *, block=128, max_blocks=4):
  """`grouped_attention` when the keys are the queries' own tokens in order (S = T, causal mask): the
  queries in n <= max_blocks blocks of >= `block` rows, block i attending only to the keys up to its
  last row, which skips (n - 1) / (2 n) of the score matrix (all of it masked). (Smaller blocks made
  the attention alone up to 2x faster on CPU but a whole training step 5-10% slower.)"""
  t = q.shape[1]
  n = max(1, min(max_blocks, t // block))
  ends = [(i + 1) * t // n for i in range(n)]
  starts = [0] + ends[:-1]
  return jnp.concatenate([grouped_attention(q[:, a:z], k[:, :z], v[:, :z], mask[:, :, a:z, :z], scale, softcap)
                          for a, z in zip(starts, ends)], axis=1)


def attend(q, k, v, mask, scale, *, causal=False, softcap=None):
  """softmax(q k^T * scale + mask) v, q [B, T, N, H], k, v [B, S, K, H], mask [B, 1, T, S] -> [B, T, N, H];
  with `softcap`, the scores are softcap * tanh(scores / softcap) first (Gemma 2).

  causal: the keys are the queries' own T tokens in order (a forward pass without a cache), so no query
  sees a later key. A query that sees no key at all (a padding position) gets an unspecified average of
  the values: its output is never used.

  On CPU the attention is `grouped_attention` (in causal blocks when `causal`): 1.1-1.2x faster than
  `jax.nn.dot_product_attention` there, forward + backward (benchmarks/llm_step.py). On other platforms
  it is `jax.nn.dot_product_attention` with its default (XLA) implementation (`grouped_attention` with a
  softcap, which it does not take); cuDNN's flash attention (implementation="cudnn") has not been
  validated on a GPU here.
  """
  k, v = k.astype(q.dtype), v.astype(q.dtype)
  cpu = functools.partial(causal_blocks_attention if causal else grouped_attention, scale=scale, softcap=softcap)
  if softcap is not None:
    return cpu(q, k, v, mask)
  return jax.lax.platform_dependent(
      q, k, v, mask, cpu=cpu,
      default=lambda q, k, v, mask: jax.nn.dot_product_attention(q, k, v, mask=mask, scale=scale))


def attend_layer(q, k, v, ctx, scale, config, softcap=None):
  """A layer's attention (q [B, T, N, H], k, v [B, S, K, H], its LayerContext): llm.models.splash's kernel
  for a forward pass without a cache when config.attention is "splash" (the window of a sliding layer; a
  traced flag, in a scanned or rematerialized layer, picks between the two kernels with lax.cond), else
  `attend`."""
  if config.attention != "splash" or ctx.cache_index is not None:
    return attend(q, k, v, ctx.mask, scale, causal=ctx.cache_index is None, softcap=softcap)
  run = lambda window: splash.splash_attention(q, k, v, ctx.valid, scale, window=window, softcap=softcap)
  if config.sliding_window is None:
    return run(None)
  if isinstance(ctx.sliding, bool):
    return run(config.sliding_window if ctx.sliding else None)
  return jax.lax.cond(ctx.sliding, lambda: run(config.sliding_window), lambda: run(None))


class LayerContext(NamedTuple):
  """What every layer needs besides its input: the mask and positions, and the cache slot to write."""
  positions: jax.Array  # [B, T]
  mask: jax.Array  # [B, 1, T, S]
  valid: jax.Array  # [B, S] bool: the key slots that hold real tokens
  cache_index: jax.Array | None  # scalar: where the T new keys go, None without a cache
  sliding: bool | jax.Array  # the layer attends through the sliding window (traced in scanned layers)


def layer_context(attention_mask, positions, cache, window=None):
  """The LayerContext of a forward pass over T new tokens (attention_mask [B, T] of the new tokens) for
  layers with a sliding window of `window` tokens (None: full causal attention)."""
  t = attention_mask.shape[1]
  if cache is None:
    slots = jnp.arange(t, dtype=jnp.int32)
    return LayerContext(positions, attention_mask_4d(positions, positions, attention_mask, slots, slots, window),
                        attention_mask, None, window is not None)
  k_valid = jax.lax.dynamic_update_slice(cache.valid, attention_mask, _at(0, cache.index))
  k_positions = jax.lax.dynamic_update_slice(cache.positions, positions, _at(0, cache.index))
  mask = attention_mask_4d(positions, k_positions, k_valid, cache.index + jnp.arange(t, dtype=jnp.int32),
                           jnp.arange(cache.valid.shape[1], dtype=jnp.int32), window)
  return LayerContext(positions, mask, k_valid, cache.index, window is not None)


def update_cache(cache, keys, values, attention_mask, positions):
  """The cache after T new tokens: keys / values, L buffers [B, S, K, H] (a tuple, or stacked) each already
  holding the new tokens at cache.index (from cached_keys_values), and the new tokens' mask and positions
  [B, T]."""
  at = cache.index
  return KVCache(keys, values, jax.lax.dynamic_update_slice(cache.valid, attention_mask, _at(0, at)),
                 jax.lax.dynamic_update_slice(cache.positions, positions, _at(0, at)), at + attention_mask.shape[1])


def cached_keys_values(layer_cache, k, v, cache_index):
  """The S keys and values a layer attends over: its cache with the T new ones written at cache_index."""
  if layer_cache is None:
    return k, v
  cache_k, cache_v = layer_cache
  k_all = jax.lax.dynamic_update_slice(cache_k, k.astype(cache_k.dtype), _at(0, cache_index, 0, 0))
  v_all = jax.lax.dynamic_update_slice(cache_v, v.astype(cache_v.dtype), _at(0, cache_index, 0, 0))
  return k_all, v_all


def last_token_index(attention_mask):
  """Index of each row's last real token, [B] (the position a sequence-classification head reads)."""
  t = attention_mask.shape[-1]
  return jnp.argmax(jnp.where(attention_mask.astype(bool), jnp.arange(t), -1), axis=-1)
