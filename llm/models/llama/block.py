"""The Llama-family block (Llama 2/3, Mistral, Qwen2, Qwen3): RMSNorm, rotary attention with grouped-query
heads (Qwen3: RMSNorm over each head's queries and keys), SwiGLU MLP. Shapes: B batch, T tokens, E = hidden_size, N heads, K kv heads, H head_dim, F = intermediate."""

import math

import jax
import jax.numpy as jnp
from flax import nnx

from llm.models import attention
from llm.models.layers import annotated, apply_rope, linear, rms_normalized, rope_inverse_frequencies


class RMSNorm(nnx.Module):
  """y = w * x / sqrt(mean(x^2) + eps), computed in float32 and cast back (as transformers does)."""

  def __init__(self, dim, eps, *, param_dtype):
    self.eps = eps
    self.scale = nnx.Param(annotated(nnx.initializers.ones, ("norm",))(None, (dim,), param_dtype))

  def __call__(self, x):
    return self.scale[...].astype(x.dtype) * rms_normalized(x, self.eps).astype(x.dtype)


def rope_frequencies(config):
  """Inverse frequencies theta^(-2i/H), i < H/2, with Llama 3's scaling when config.rope_scaling is set."""
  inv_freq = rope_inverse_frequencies(config.rope_theta, config.head_dim)
  if not config.rope_scaling:
    return inv_freq
  s = dict(config.rope_scaling)
  factor, low, high = s["factor"], s["low_freq_factor"], s["high_freq_factor"]
  old_len = s["original_max_position_embeddings"]
  wavelen = 2 * math.pi / inv_freq
  scaled = jnp.where(wavelen > old_len / low, inv_freq / factor, inv_freq)
  smooth = (old_len / wavelen - low) / (high - low)
  smoothed = (1 - smooth) * scaled / factor + smooth * scaled
  medium = (wavelen >= old_len / high) & (wavelen <= old_len / low)
  return jnp.where(medium, smoothed, scaled)


class Block(nnx.Module):
  """x + attn(norm(x)), then x + mlp(norm(x)); attn with RoPE and GQA, mlp = down(silu(gate x) * up x)."""

  def __init__(self, config, *, rngs):
    e, n, k, h, f = (config.hidden_size, config.num_heads, config.num_kv_heads, config.head_dim,
                     config.intermediate_size)
    kw = dict(config=config, rngs=rngs)
    self.config = config
    self.input_norm = RMSNorm(e, config.norm_eps, param_dtype=config.weight_dtype)
    self.q_proj = linear(e, n * h, ("embed", "q_heads"), bias=config.qkv_bias, **kw)
    self.k_proj = linear(e, k * h, ("embed", "kv_heads"), bias=config.qkv_bias, **kw)
    self.v_proj = linear(e, k * h, ("embed", "kv_heads"), bias=config.qkv_bias, **kw)
    self.o_proj = linear(n * h, e, ("q_heads", "embed"), bias=config.out_bias, **kw)
    if config.qk_norm:
      self.q_norm = RMSNorm(h, config.norm_eps, param_dtype=config.weight_dtype)
      self.k_norm = RMSNorm(h, config.norm_eps, param_dtype=config.weight_dtype)
    self.post_norm = RMSNorm(e, config.norm_eps, param_dtype=config.weight_dtype)
    self.gate_proj = linear(e, f, ("embed", "mlp"), bias=config.mlp_bias, **kw)
    self.up_proj = linear(e, f, ("embed", "mlp"), bias=config.mlp_bias, **kw)
    self.down_proj = linear(f, e, ("mlp", "embed"), bias=config.mlp_bias, **kw)

  def __call__(self, x, ctx, layer_cache=None):
    """x [B, T, E] -> ([B, T, E], (keys, values)): with layer_cache, the layer's cache buffers [B, S, K, H]
    with the T new keys / values written; without, the new ones [B, T, K, H]."""
    c = self.config
    b, t, e = x.shape
    x = x.reshape(b * t, e)  # tokens flattened: 2-D matmuls (see llm.models.layers.linear)
    y = self.input_norm(x)
    inv_freq = rope_frequencies(c)
    q = self.q_proj(y).reshape(b, t, c.num_heads, c.head_dim)
    k = self.k_proj(y).reshape(b, t, c.num_kv_heads, c.head_dim)
    if c.qk_norm:
      q, k = self.q_norm(q), self.k_norm(k)
    q, k = apply_rope(q, ctx.positions, inv_freq), apply_rope(k, ctx.positions, inv_freq)
    v = self.v_proj(y).reshape(b, t, c.num_kv_heads, c.head_dim)
    k_all, v_all = attention.cached_keys_values(layer_cache, k, v, ctx.cache_index)
    out = attention.attend_layer(q, k_all, v_all, ctx, c.head_dim ** -0.5, c)
    x = x + self.o_proj(out.reshape(b * t, c.num_heads * c.head_dim))
    y = self.post_norm(x)
    x = x + self.down_proj(jax.nn.silu(self.gate_proj(y)) * self.up_proj(y))
    return x.reshape(b, t, e), (k_all, v_all)


def final_norm(config, *, rngs):
  del rngs  # the family interface's signature; RMSNorm has no random init
  return RMSNorm(config.hidden_size, config.norm_eps, param_dtype=config.weight_dtype)


def position_embedding(config, *, rngs):
  """None: positions enter through RoPE inside each block."""
  del config, rngs
