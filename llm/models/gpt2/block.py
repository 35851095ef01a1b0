"""The GPT-2 block: pre-LayerNorm, fused causal self-attention (c_attn), gelu_new MLP; and the learned
absolute position embeddings the Transformer adds to the token embeddings. Shapes: B batch, T tokens, E = hidden_size, N heads, H head_dim."""

import jax
from flax import nnx

from llm.models import attention
from llm.models.layers import INIT_STD, annotated, layer_norm, linear


class Block(nnx.Module):
  """x + c_proj(attn(c_attn(ln_1 x))), then x + mlp_c_proj(gelu_new(c_fc(ln_2 x)))."""

  def __init__(self, config, *, rngs):
    e, f = config.hidden_size, config.intermediate_size
    kw = dict(config=config, rngs=rngs)
    self.config = config
    self.ln_1 = layer_norm(config, rngs=rngs)
    self.c_attn = linear(e, 3 * e, ("embed", "qkv"), bias=True, **kw)
    self.c_proj = linear(e, e, ("q_heads", "embed"), bias=True, **kw)
    self.ln_2 = layer_norm(config, rngs=rngs)
    self.c_fc = linear(e, f, ("embed", "mlp"), bias=True, **kw)
    self.mlp_c_proj = linear(f, e, ("mlp", "embed"), bias=True, **kw)

  def __call__(self, x, ctx, layer_cache=None):
    """x [B, T, E] -> ([B, T, E], (keys, values)): with layer_cache, the layer's cache buffers [B, S, N, H]
    with the T new keys / values written; without, the new ones [B, T, N, H]."""
    c = self.config
    b, t, e = x.shape
    x = x.reshape(b * t, e)  # tokens flattened: 2-D matmuls (see llm.models.layers.linear)
    q, k, v = (z.reshape(b, t, c.num_heads, c.head_dim) for z in jax.numpy.split(self.c_attn(self.ln_1(x)), 3, -1))
    k_all, v_all = attention.cached_keys_values(layer_cache, k, v, ctx.cache_index)
    out = attention.attend_layer(q, k_all, v_all, ctx, c.head_dim ** -0.5, c)
    x = x + self.c_proj(out.reshape(b * t, e))
    x = x + self.mlp_c_proj(jax.nn.gelu(self.c_fc(self.ln_2(x)), approximate=True))
    return x.reshape(b, t, e), (k_all, v_all)


def final_norm(config, *, rngs):
  return layer_norm(config, rngs=rngs)


def position_embedding(config, *, rngs):
  """Learned absolute positions [max_position_embeddings, E], added to the token embeddings."""
  return nnx.Embed(config.max_position_embeddings, config.hidden_size, dtype=config.compute_dtype,
                   param_dtype=config.weight_dtype,
                   embedding_init=annotated(nnx.initializers.normal(INIT_STD), (None, "embed")), rngs=rngs)
