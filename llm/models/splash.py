"""Splash attention, the Pallas TPU kernel of `jax.experimental.pallas.ops.tpu.splash_attention`, for a
forward pass over a sequence's own tokens (model.attention=splash): causal, grouped-query heads (the MQA
kernel vmapped over the key/value heads), padding as segment ids (a real token attends to real tokens only),
an optional sliding window and Gemma 2's score soft-capping. It computes what `attention.attend` does with
the causal mask of `attention.layer_context`, for the real tokens (padding queries get other values: they
are never used).

On TPU it is the compiled Mosaic kernel, which lowers only with jax_enable_x64 off (jax's default; Mosaic
rejects the kernel's index arithmetic in int64); on CPU the same kernel in Pallas interpret mode (exact
and slow: for tests). Mosaic kernels cannot be partitioned by XLA, so under an abstract mesh in context
(`jax.sharding.use_abstract_mesh`: llm.parallel.sharding.traced_on, as the trainers, their scoring and
llm.training.aot trace their functions) the kernel runs inside `shard_map`: batch rows split over the
"batch" rule's axes and heads over the "q_heads" rule's axis where they divide, as llm.parallel.sharding
places the activations.

Shapes: B batch, T tokens, N query heads, K key/value heads, H head dim.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental.pallas.ops.tpu import splash_attention as splash
from jax.sharding import PartitionSpec

from llm.parallel import sharding

BLOCK = 128  # the kernel's query and key tile; sequences are padded to a multiple of it


def splash_attention(q, k, v, valid, scale, *, window=None, softcap=None):
  """softmax(q k^T * scale + causal, padding and window mask) v: q [B, T, N, H], k, v [B, T, K, H], valid
  [B, T] bool (the real tokens) -> [B, T, N, H]. `window`: a query sees the keys at most window - 1 slots
  before it; `softcap`: scores are softcap * tanh(scores / softcap) first."""
  t = q.shape[1]
  pad = -t % BLOCK
  widen = lambda x: jnp.pad(x, [(0, 0), (0, pad)] + [(0, 0)] * (x.ndim - 2))
  q, k, v = (widen(x.astype(q.dtype)) for x in (q * scale, k, v))
  segments = widen(valid.astype(jnp.int32))  # 1: a real token, 0: padding (which sees padding only)
  local = functools.partial(attend_local, window=window, softcap=softcap)
  run = lambda *args: jax.lax.platform_dependent(*args, cpu=functools.partial(local, interpret=True),
                                                 default=functools.partial(local, interpret=False))
  mesh = jax.sharding.get_abstract_mesh()
  if not mesh.empty and mesh.size > 1:
    run = shard_over(run, mesh, k.shape)
  return run(q, k, v, segments)[:, :t]


def attend_local(q, k, v, segments, *, window, softcap, interpret):
  """splash_attention on the shards one device holds (already scaled and padded)."""
  b, t, n, h = q.shape
  kv_heads = k.shape[2]
  groups = n // kv_heads
  shape = (t, t)
  one = splash.CausalMask(shape) if window is None else splash.LocalMask(shape, (window - 1, 0), offset=0)
  kernel = splash.make_splash_mqa_single_device(
      splash.MultiHeadMask([one] * groups), block_sizes=block_sizes(t), attn_logits_soft_cap=softcap,
      interpret=interpret)
  q = q.reshape(b, t, kv_heads, groups, h).transpose(0, 2, 3, 1, 4)  # [B, K, G, T, H]
  k, v = k.transpose(0, 2, 1, 3), v.transpose(0, 2, 1, 3)  # [B, K, T, H]
  per_head = jax.vmap(kernel, in_axes=(0, 0, 0, None))
  per_row = jax.vmap(lambda q, k, v, s: per_head(q, k, v, splash.SegmentIds(s, s)))
  out = per_row(q, k, v, segments)  # [B, K, G, T, H]
  return out.transpose(0, 3, 1, 2, 4).reshape(b, t, n, h)


def block_sizes(length):
  """Tiles of up to 512 tokens that divide `length` (a multiple of BLOCK), forward and backward."""
  block = int(np.gcd(length, 512))
  return splash.BlockSizes(block_q=block, block_kv=block, block_kv_compute=block, block_q_dkv=block,
                           block_kv_dkv=block, block_kv_dkv_compute=block, block_q_dq=block, block_kv_dq=block)


def shard_over(run, mesh, kv_shape):
  """`run` inside shard_map over `mesh`: rows and key/value heads (keys of `kv_shape` [B, T, K, H]) split as
  llm.parallel.sharding's rules place them where the mesh axes divide them (else whole on every device);
  query heads follow their key/value heads."""
  spec = sharding.logical_to_spec(("batch", None, "kv_heads", None), kv_shape, mesh)
  return jax.shard_map(run, mesh=mesh, in_specs=(spec, spec, spec, PartitionSpec(*spec[:2])), out_specs=spec,
                       check_vma=False)
