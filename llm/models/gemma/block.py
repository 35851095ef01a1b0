"""The Gemma 2 / Gemma 3 block: four RMSNorms with (1 + w) scales (before and after attention and the MLP),
rotary attention with grouped-query heads scaled by query_pre_attn_scalar^-1/2, sliding-window layers
(Gemma 3: with their own RoPE base), Gemma 2's attention-score soft-capping, Gemma 3's per-head q/k norms,
and a GeGLU MLP (tanh-approximated GELU). Shapes: B batch, T tokens, E = hidden_size, N heads, K kv heads,
H head_dim, F = intermediate."""

import jax
import jax.numpy as jnp
from flax import nnx

from llm.models import attention
from llm.models.layers import annotated, apply_rope, linear, rms_normalized, rope_inverse_frequencies
from llm.models.llama.block import position_embedding as position_embedding  # none: RoPE in the blocks


class RMSNorm(nnx.Module):
  """y = (1 + w) * x / sqrt(mean(x^2) + eps), in float32 and cast back (Gemma's norm: w is stored centred
  at 0, as in its checkpoints)."""

  def __init__(self, dim, eps, *, param_dtype):
    self.eps = eps
    self.scale = nnx.Param(annotated(nnx.initializers.zeros, ("norm",))(None, (dim,), param_dtype))

  def __call__(self, x):
    return (rms_normalized(x, self.eps) * (1.0 + self.scale[...].astype(jnp.float32))).astype(x.dtype)


def rope_frequencies(config, sliding):
  """Inverse frequencies base^(-2i/H): base local_rope_theta in Gemma 3's sliding layers, rope_theta
  elsewhere, divided by the linear scaling factor (config.rope_scaling, Gemma 3's global layers).
  `sliding` may be traced (a scanned layer's flag)."""
  inv_freq = rope_inverse_frequencies(config.rope_theta, config.head_dim) / dict(config.rope_scaling).get("factor", 1.0)
  if config.local_rope_theta is None:
    return inv_freq
  return jnp.where(sliding, rope_inverse_frequencies(config.local_rope_theta, config.head_dim), inv_freq)


class Block(nnx.Module):
  """x + post_attn_norm(attn(input_norm x)), then x + post_mlp_norm(mlp(pre_mlp_norm x)),
  mlp = down(gelu_tanh(gate x) * up x)."""

  def __init__(self, config, *, rngs):
    e, n, k, h, f = (config.hidden_size, config.num_heads, config.num_kv_heads, config.head_dim,
                     config.intermediate_size)
    kw = dict(config=config, rngs=rngs)
    norm = lambda dim: RMSNorm(dim, config.norm_eps, param_dtype=config.weight_dtype)
    self.config = config
    self.input_norm, self.post_attn_norm, self.pre_mlp_norm, self.post_mlp_norm = (norm(e) for _ in range(4))
    self.q_proj = linear(e, n * h, ("embed", "q_heads"), bias=config.qkv_bias, **kw)
    self.k_proj = linear(e, k * h, ("embed", "kv_heads"), bias=config.qkv_bias, **kw)
    self.v_proj = linear(e, k * h, ("embed", "kv_heads"), bias=config.qkv_bias, **kw)
    self.o_proj = linear(n * h, e, ("q_heads", "embed"), bias=config.out_bias, **kw)
    if config.qk_norm:
      self.q_norm, self.k_norm = norm(h), norm(h)
    self.gate_proj = linear(e, f, ("embed", "mlp"), bias=False, **kw)
    self.up_proj = linear(e, f, ("embed", "mlp"), bias=False, **kw)
    self.down_proj = linear(f, e, ("mlp", "embed"), bias=False, **kw)

  def __call__(self, x, ctx, layer_cache=None):
    """x [B, T, E] -> ([B, T, E], (keys, values)) as llm.models.llama.Block."""
    c = self.config
    b, t, e = x.shape
    x = x.reshape(b * t, e)  # tokens flattened: 2-D matmuls (see llm.models.layers.linear)
    y = self.input_norm(x)
    q = self.q_proj(y).reshape(b, t, c.num_heads, c.head_dim)
    k = self.k_proj(y).reshape(b, t, c.num_kv_heads, c.head_dim)
    v = self.v_proj(y).reshape(b, t, c.num_kv_heads, c.head_dim)
    if c.qk_norm:
      q, k = self.q_norm(q), self.k_norm(k)
    inv_freq = rope_frequencies(c, ctx.sliding)
    q, k = apply_rope(q, ctx.positions, inv_freq), apply_rope(k, ctx.positions, inv_freq)
    k_all, v_all = attention.cached_keys_values(layer_cache, k, v, ctx.cache_index)
    scale = (c.query_pre_attn_scalar or c.head_dim) ** -0.5
    out = attention.attend_layer(q, k_all, v_all, ctx, scale, c, softcap=c.attn_logit_softcap)
    x = x + self.post_attn_norm(self.o_proj(out.reshape(b * t, c.num_heads * c.head_dim)))
    y = self.pre_mlp_norm(x)
    y = self.down_proj(jax.nn.gelu(self.gate_proj(y), approximate=True) * self.up_proj(y))
    x = x + self.post_mlp_norm(y)
    return x.reshape(b, t, e), (k_all, v_all)


def final_norm(config, *, rngs):
  del rngs  # the family interface's signature; RMSNorm has no random init
  return RMSNorm(config.hidden_size, config.norm_eps, param_dtype=config.weight_dtype)

