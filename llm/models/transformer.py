"""Decoder-only transformers in Flax NNX: `Transformer(config, rngs=...)` for every family of
llm.models.registry (blocks, final norm and position embedding come from the family package).

Calling convention: `model(input_ids [B, T] int32, attention_mask [B, T] | None) -> logits [B, T, V]`
(a causal LM) or `scores [B, num_labels]` (config.num_labels set: the `*ForSequenceClassification`
layout, the score of each row's last attended token that is not config.pad_token_id, as transformers
reads it; with pad == eos that is the token before a final EOS). With `cache=` (llm.models.attention.KVCache) it
returns (logits, new cache): the decoding step of llm.inference.sampling.

Layers: config.num_layers Blocks in a list, each traced on its own (`blocks[i]`), or with
config.scan_layers one Block whose every parameter is stacked along a leading "layers" axis [L, ...],
run by `jax.lax.scan` so that the traced and compiled program holds one layer whatever the depth
(`run_blocks`). Both compute the same function; `layer_path` maps the per-layer parameter paths of the
HF tables to the stacked ones.
"""

import jax
import jax.numpy as jnp
from flax import nnx

from llm.models import attention
from llm.models.config import ModelConfig
from llm.models.layers import INIT_STD, annotated, soft_cap
from llm.parallel import sharding


class Transformer(nnx.Module):
  """Embeddings, config.num_layers blocks, a final norm and an LM head (or the tied embedding, or a score
  head)."""

  def __init__(self, config, *, rngs):
    family = config.family
    self.config = config
    embed_init = annotated(nnx.initializers.normal(INIT_STD), ("vocab", "embed"))
    self.embed = nnx.Embed(config.vocab_size, config.hidden_size, dtype=config.compute_dtype,
                           param_dtype=config.weight_dtype, embedding_init=embed_init, rngs=rngs)
    self.position_embed = family.position_embedding(config, rngs=rngs)  # None where the blocks use RoPE
    if config.scan_layers:
      self.blocks = stacked(lambda rngs: family.Block(config, rngs=rngs), config.num_layers)(rngs)
    else:
      self.blocks = nnx.List([family.Block(config, rngs=rngs) for _ in range(config.num_layers)])
    self.final_norm = family.final_norm(config, rngs=rngs)
    head_init = annotated(nnx.initializers.normal(INIT_STD), ("embed", "vocab"))
    if config.num_labels is not None:
      self.score = nnx.Linear(config.hidden_size, config.num_labels, use_bias=False, dtype=config.compute_dtype,
                              param_dtype=config.weight_dtype,
                              kernel_init=annotated(nnx.initializers.normal(INIT_STD), ("embed", None)),
                              rngs=rngs)
    elif not config.tie_word_embeddings:
      self.lm_head = nnx.Linear(config.hidden_size, config.vocab_size, use_bias=False, dtype=config.compute_dtype,
                                param_dtype=config.weight_dtype, kernel_init=head_init, rngs=rngs)

  def hidden_states(self, input_ids, attention_mask=None, *, cache=None):
    """The final-norm hidden states [B, T, E] (and the new cache when `cache` is given)."""
    if attention_mask is None:
      attention_mask = jnp.ones(input_ids.shape, bool)
    attention_mask = attention_mask.astype(bool)
    positions = attention.positions_from_mask(attention_mask)
    if cache is not None:  # continue each row's count from the real tokens already cached
      cached = cache.valid.sum(-1, keepdims=True, dtype=jnp.int32)
      positions = jnp.where(attention_mask, positions + cached, 0)
    full, sliding = (attention.layer_context(attention_mask, positions, cache, window)
                     for window in (None, self.config.sliding_window))
    x = self.embed(input_ids)
    if self.config.embedding_multiplier != 1.0:  # Gemma: sqrt(hidden_size), rounded to the weights' dtype
      x = x * jnp.asarray(self.config.embedding_multiplier, self.config.weight_dtype).astype(x.dtype)
    if self.position_embed is not None:
      x = x + self.position_embed(positions)
    x, new_keys, new_values = run_blocks(self.blocks, self.config, x, full, sliding, cache)
    x = self.final_norm(x)
    if cache is None:
      return x
    return x, attention.update_cache(cache, new_keys, new_values, attention_mask, positions)

  def logits(self, hidden):
    """LM logits [..., V] float32 from hidden states [..., E] (tied: hidden @ embedding^T): the matmul runs
    in the compute dtype and accumulates in float32, so bfloat16 logits are never rounded before the
    log-softmax."""
    weight = self.embed.embedding[...].T if self.config.tie_word_embeddings else self.lm_head.kernel[...]
    dtype = self.config.compute_dtype
    logits = vocab_logits(hidden.reshape(-1, hidden.shape[-1]).astype(dtype), weight.astype(dtype))
    if self.config.final_logit_softcap is not None:  # Gemma 2: cap * tanh(logits / cap)
      logits = soft_cap(logits, self.config.final_logit_softcap)
    return logits.reshape(*hidden.shape[:-1], logits.shape[-1])

  def __call__(self, input_ids, attention_mask=None, *, cache=None):
    out = self.hidden_states(input_ids, attention_mask, cache=cache)
    hidden, new_cache = (out, None) if cache is None else out
    if self.config.num_labels is not None:
      mask = jnp.ones(input_ids.shape, bool) if attention_mask is None else attention_mask.astype(bool)
      if self.config.pad_token_id is not None:  # transformers' rule: the last token that is not the pad id
        mask = mask & (input_ids != self.config.pad_token_id)
      last = attention.last_token_index(mask)
      result = self.score(hidden[jnp.arange(hidden.shape[0]), last])
    else:
      result = self.logits(hidden)
    return result if cache is None else (result, new_cache)


def stacked(build, layers):
  """`build(rngs) -> module` made once per layer and stacked: rngs -> one module whose every variable has a
  leading [layers] axis, named "layers" in its logical axis names (each layer drawn from its own split of
  the rngs). The scanned layers' blocks and their LoRA adapters are built so."""
  return nnx.split_rngs(splits=layers)(
      nnx.vmap(build, in_axes=0, out_axes=0, transform_metadata={nnx.PARTITION_NAME: "layers"}))


def run_blocks(blocks, config, x, full, sliding, cache):
  """x [B, T, E] through every layer: (x, keys, values), the layers' keys and values with the new tokens
  written (their caches with `cache`; a tuple of L buffers, or stacked [L, ...] with config.scan_layers, where
  without a cache they are None). `full` and `sliding` are the LayerContexts of the layers with full and
  sliding-window attention.

  With config.remat (and no cache: decoding needs none) each layer is rematerialized in the backward pass,
  keeping what config.remat_policy saves. Scanned, the layers are one lax.scan over the stacked parameters,
  each layer's activations held split over the batch axes and its context chosen by its sliding flag; the
  stacked cache is the scan's carry, each layer's slice written in place (decoding this way still holds
  more memory than unrolled layers: benchmarks/RESULTS.md)."""
  remat = config.remat and cache is None
  policy = getattr(jax.checkpoint_policies, config.remat_policy)
  if not config.scan_layers:
    call = type(blocks[0]).__call__
    call = nnx.remat(call, policy=policy) if remat else call
    keys, values = [], []
    for i, block in enumerate(blocks):
      layer_cache = None if cache is None else (cache.key[i], cache.value[i])
      x, (k, v) = call(block, x, sliding if config.slides(i) else full, layer_cache)
      keys.append(k)
      values.append(v)
    return x, tuple(keys), tuple(values)
  graphdef, state = nnx.split(blocks)
  slides = [config.slides(i) for i in range(config.num_layers)]

  def layer(carry, scanned):
    x, keys, values = carry
    state, slides_here, i = scanned
    x = sharding.constrain_batch(x)
    ctx = full if not any(slides) else jax.tree.map(lambda s, f: jnp.where(slides_here, s, f), sliding, full)
    layer_cache = None if cache is None else (keys[i], values[i])
    x, (k, v) = nnx.merge(graphdef, state)(x, ctx, layer_cache)
    if cache is None:  # no layer's keys are kept
      return (x, None, None), None
    return (x, keys.at[i].set(k), values.at[i].set(v)), None  # the stacked cache written in place

  if remat:
    layer = jax.checkpoint(layer, policy=policy, prevent_cse=False)
  carry = (x, None, None) if cache is None else (x, cache.key, cache.value)
  (x, keys, values), _ = jax.lax.scan(layer, carry, (state, jnp.array(slides), jnp.arange(config.num_layers)))
  return x, keys, values


def layer_path(config, path):
  """(where a parameter lives in the model, its layer index): ("blocks", i, ...) (the paths of the
  families' HF tables) lives at ("blocks", ...) index i of the stacked arrays with config.scan_layers;
  every other path as it is, with index None."""
  if config.scan_layers and path[0] == "blocks":
    return ("blocks", *path[2:]), path[1]
  return path, None


def f32_matmul(a, b):
  """a @ b accumulated and returned in float32 or wider (bfloat16 operands: exact products, no rounding of
  the result to bfloat16; float64 operands stay float64)."""
  return jnp.matmul(a, b, preferred_element_type=jnp.promote_types(a.dtype, jnp.float32))


@jax.custom_vjp
def vocab_logits(hidden, weight):
  """hidden [N, E] @ weight [E, V] -> logits [N, V] float32; its weight gradient hidden^T g is computed from
  an explicitly transposed hidden [E, N]: XLA's CPU backend runs the matmul with both operands contracted
  over their first dimension (what it emits otherwise) at about half the speed, and with a large
  vocabulary this is the step's largest matmul. Gradients come back in the operands' dtypes."""
  return f32_matmul(hidden, weight)


def _vocab_logits_fwd(hidden, weight):
  return f32_matmul(hidden, weight), (hidden, weight)


def _vocab_logits_bwd(residuals, g):
  hidden, weight = residuals
  g = g.astype(hidden.dtype)
  return (f32_matmul(g, weight.T).astype(hidden.dtype),
          f32_matmul(jax.lax.optimization_barrier(hidden.T), g).astype(weight.dtype))


vocab_logits.defvjp(_vocab_logits_fwd, _vocab_logits_bwd)


def check_positions(model, longest, what, hint=""):
  """Raises a ValueError when `longest` tokens (`what`, as the message names it; `hint`: what to change)
  exceed a model with learned absolute positions (GPT-2): positions past max_position_embeddings would
  read outside the table (NaN)."""
  limit = model.config.max_position_embeddings
  if model.position_embed is not None and longest > limit:
    raise ValueError(f"{what} of {longest} tokens exceeds the model's {limit} learned positions "
                     f"(max_position_embeddings){'; ' + hint if hint else ''}")


def init_model(config: ModelConfig, seed: int = 0) -> "Transformer":
  """A randomly initialized Transformer (normal(0.02) weights, as transformers initializes)."""
  return Transformer(config, rngs=nnx.Rngs(seed))


def param_count(model: nnx.Module) -> int:
  return sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
