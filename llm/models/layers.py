"""Small layers shared by the families, with logical axis names on every parameter (mapped to mesh axes by
llm.parallel.sharding's rules): Linear (kernel [in, out], optionally with a low-rank adapter) and LayerNorm;
and the pieces of arithmetic the families share: RMS normalization, the rotary embedding, soft-capping."""

import jax
import jax.numpy as jnp
from flax import nnx

INIT_STD = 0.02  # transformers' initializer_range default


def annotated(init, names):
  """`init` whose parameter carries the logical axis names `names` (placed later by llm.parallel.sharding, not
  at creation)."""
  return nnx.with_partitioning(init, names, eager_sharding=False)


class Linear(nnx.Linear):
  """nnx.Linear that may carry a low-rank adapter (LoRA, Hu et al. 2021; llm.models.lora attaches it):

      y = x W + b + scale * (x A) B,   A [in, r], B [r, out] (an nnx.LoRA, its params nnx.LoRAParam)

  Without an adapter (`adapter` None, the default) it is nnx.Linear."""

  def __init__(self, *args, **kwargs):
    super().__init__(*args, **kwargs)
    self.adapter = nnx.data(None)  # a sub-module once llm.models.lora attaches one
    self.adapter_scale = 0.0

  def __call__(self, x):
    y = super().__call__(x)
    return y if self.adapter is None else y + (self.adapter_scale * self.adapter(x)).astype(y.dtype)

  def merged_kernel(self):
    """W + scale * A B in W's dtype (summed in float32): the kernel that computes the adapted layer alone."""
    kernel = self.kernel[...]
    if self.adapter is None:
      return kernel
    delta = self.adapter.lora_a[...].astype(jnp.float32) @ self.adapter.lora_b[...].astype(jnp.float32)
    return (kernel.astype(jnp.float32) + self.adapter_scale * delta).astype(kernel.dtype)


def linear(n_in, n_out, names, *, bias, config, rngs):
  """Linear with kernel [n_in, n_out] annotated `names` and bias annotated names[-1].

  The blocks call their linears on tokens flattened to [B * T, n_in]: on [B, T, n_in] the kernel's
  gradient contracts two dimensions, and XLA's CPU backend then copies the [B, T, n_out] cotangent into a
  transposed layout first (the MLP's backward pass took 1.3-1.7x as long)."""
  return Linear(n_in, n_out, use_bias=bias, dtype=config.compute_dtype, param_dtype=config.weight_dtype,
                    kernel_init=annotated(nnx.initializers.normal(INIT_STD), names),
                    bias_init=annotated(nnx.initializers.zeros, names[-1:]), rngs=rngs)


def layer_norm(config, *, rngs):
  return nnx.LayerNorm(config.hidden_size, epsilon=config.norm_eps, dtype=config.compute_dtype,
                       param_dtype=config.weight_dtype,
                       scale_init=annotated(nnx.initializers.ones, ("norm",)),
                       bias_init=annotated(nnx.initializers.zeros, ("norm",)), rngs=rngs)


def rms_normalized(x, eps):
  """x / sqrt(mean(x^2) + eps) over the last axis, in float32 (the RMSNorms scale it and cast back)."""
  x32 = x.astype(jnp.float32)
  return x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + eps)


def rope_inverse_frequencies(theta, head_dim):
  """RoPE's inverse frequencies theta^(-2i/H), i < H/2, float32 [H/2]."""
  return 1.0 / (theta ** (jnp.arange(0, head_dim, 2, dtype=jnp.float32) / head_dim))


def soft_cap(x, cap):
  """cap * tanh(x / cap): x squashed smoothly into (-cap, cap) (Gemma 2's scores and logits)."""
  return cap * jnp.tanh(x / cap)


def apply_rope(x, positions, inv_freq):
  """Rotary embedding, transformers' rotate-half layout: x [B, T, N, H], positions [B, T]."""
  angles = positions[..., None].astype(jnp.float32) * inv_freq  # [B, T, H/2]
  cos = jnp.concatenate([jnp.cos(angles)] * 2, axis=-1)[:, :, None, :].astype(x.dtype)
  sin = jnp.concatenate([jnp.sin(angles)] * 2, axis=-1)[:, :, None, :].astype(x.dtype)
  half = x.shape[-1] // 2
  rotated = jnp.concatenate([-x[..., half:], x[..., :half]], axis=-1)
  return x * cos + rotated * sin
