"""The CPU attention (grouped-query layout, causal query blocks) against a plain float64 softmax (and
jax.nn.dot_product_attention against the same, to float32 precision); the Pallas splash kernel
(llm.models.splash, in interpret mode) against the same softmax, and a model running it against one running
XLA's attention; and the LM head's matmul with its own gradient against a plain matmul, on random
instances."""

import functools

import hypothesis
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from llm.models import attention, splash
from llm.models.transformer import vocab_logits


def random_mask(rng, b, t, window):
  """A [B, 1, T, T] forward-pass mask (layer_context without a cache) for rows with random left padding,
  right padding or both, and an optional sliding window."""
  return mask_4d(random_padding(rng, b, t), window)


def random_padding(rng, b, t):
  """[B, T] bool: rows with random left padding, right padding or both (row 0 without)."""
  mask = np.ones((b, t), bool)
  for row in range(b):
    left, right = rng.integers(0, t // 2 + 1, 2)
    mask[row, :left] = False
    mask[row, t - right:] = False
  mask[0] = True  # at least one row without padding
  return mask


def mask_4d(mask, window):
  t = mask.shape[1]
  positions = attention.positions_from_mask(jnp.asarray(mask))
  slots = jnp.arange(t, dtype=jnp.int32)
  return attention.attention_mask_4d(positions, positions, jnp.asarray(mask), slots, slots, window)


def reference_attention(q, k, v, mask, scale, softcap=None):
  """softmax(q k^T scale + mask) v with the key/value heads repeated, in the inputs' dtype
  (jax.nn.dot_product_attention's XLA version takes the softmax in float32 even for float64 inputs);
  with `softcap`, the scores softcap * tanh(scores / softcap) before the mask."""
  groups = q.shape[2] // k.shape[2]
  k, v = jnp.repeat(k, groups, axis=2), jnp.repeat(v, groups, axis=2)
  scores = jnp.einsum("btnh,bsnh->bnts", q, k) * scale
  scores = scores if softcap is None else softcap * jnp.tanh(scores / softcap)
  weights = jax.nn.softmax(jnp.where(mask, scores, jnp.finfo(scores.dtype).min), axis=-1)
  return jnp.einsum("bnts,bsnh->btnh", weights, v)


IMPLEMENTATIONS = {
    "reference": reference_attention,
    "grouped": attention.grouped_attention,
    "causal_blocks": lambda q, k, v, mask, scale: attention.causal_blocks_attention(q, k, v, mask, scale, block=4),
    "attend": lambda q, k, v, mask, scale: attention.attend(q, k, v, mask, scale, causal=True),
}


@functools.partial(jax.jit, static_argnums=0)
def attention_and_grads(name, q, k, v, mask, cotangent):
  out, vjp = jax.vjp(lambda q, k, v: IMPLEMENTATIONS[name](q, k, v, mask, q.shape[-1] ** -0.5), q, k, v)
  return (out, *vjp(cotangent))


@hypothesis.settings(max_examples=4)
@hypothesis.given(st.just(3), st.sampled_from([6, 17]), st.sampled_from([(4, 2), (6, 1)]),
                  st.sampled_from([None, 3]), st.integers(0, 2 ** 31))
def test_cpu_attention_equals_a_plain_softmax(b, t, heads, window, seed):
  """Outputs and gradients of q, k, v, with GQA, padding on either side and a sliding window."""
  n, kv = heads
  rng = np.random.default_rng(seed)
  q, k, v = (jnp.asarray(rng.normal(size=(b, t, h, 8))) for h in (n, kv, kv))
  mask = random_mask(rng, b, t, window)
  # A query that sees no key (a padding position) gets an unspecified output and no gradient from it.
  sees = np.asarray(mask.any(-1))[:, 0, :, None, None]  # [B, T, 1, 1]
  cotangent = jnp.asarray(rng.normal(size=(b, t, n, 8)) * sees)
  expected = attention_and_grads("reference", q, k, v, mask, cotangent)
  for name in ("grouped", "causal_blocks", "attend"):
    out, *grads = attention_and_grads(name, q, k, v, mask, cotangent)
    np.testing.assert_allclose(out * sees, expected[0] * sees, rtol=1e-10, atol=1e-10, err_msg=name)
    for got, want in zip(grads, expected[1:]):
      np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10, err_msg=name)
  dpa = jax.nn.dot_product_attention(q, k, v, mask=mask, scale=8 ** -0.5)  # float32 softmax inside
  np.testing.assert_allclose(dpa * sees, expected[0] * sees, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("t, heads, window, softcap, seed", [(100, (4, 2), None, None, 0), (200, (3, 1), 9, None, 1),
                                                          (150, (4, 2), None, 0.5, 2)])
def test_splash_kernel_equals_a_plain_softmax(t, heads, window, softcap, seed):
  """The splash kernel (Pallas interpret mode: the TPU kernel's own code, run by XLA on the CPU), forward and
  backward, against the float64 softmax on the real tokens: causal, GQA, padding on either side (segment
  ids), a sliding window, Gemma 2's soft-cap; sequences padded up to the kernel's 128-token tiles."""
  n, kv = heads
  rng = np.random.default_rng(seed)
  q, k, v = (rng.normal(size=(2, t, h, 32)) for h in (n, kv, kv))
  valid = random_padding(rng, 2, t)
  real = valid[:, :, None, None]  # padding queries are never used: no cotangent from them
  cotangent = rng.normal(size=(2, t, n, 32)) * real
  scale = 32 ** -0.5

  def run(fn, dtype):
    args = (jnp.asarray(x, dtype) for x in (q, k, v))
    out, vjp = jax.vjp(fn, *args)
    return out, *vjp(jnp.asarray(cotangent, dtype))

  mask = mask_4d(valid, window)
  expected = run(lambda q, k, v: reference_attention(q, k, v, mask, scale, softcap), jnp.float64)
  got = run(jax.jit(lambda q, k, v: splash.splash_attention(q, k, v, jnp.asarray(valid), scale, window=window,
                                                            softcap=softcap)), jnp.float32)
  np.testing.assert_allclose(got[0] * real, expected[0] * real, atol=2e-5, rtol=0)
  for name, a, b in zip("qkv", got[1:], expected[1:]):
    np.testing.assert_allclose(a, b, atol=5e-5, rtol=0, err_msg=f"d{name}")


def test_a_model_with_the_splash_kernel_equals_one_with_xla_attention(tiny_hf_configs):
  """Gemma 3 scanned (sliding and full layers: the scan picks the windowed or the causal kernel per layer with
  lax.cond) and Llama unrolled and rematerialized (no window; nnx.remat traces the sliding flag): the same
  log-probs of the real tokens and the same gradients."""
  import dataclasses

  from flax import nnx

  from llm.inference import logprobs
  from llm.models import config as model_config
  from llm.models.transformer import init_model
  ids = jnp.asarray(np.random.default_rng(0).integers(1, 97, (2, 140)), jnp.int32)
  valid = np.ones((2, 140), bool)
  valid[1, :30] = False
  scored = np.pad(valid[:, 1:] & valid[:, :-1], [(0, 0), (1, 0)])  # token t after a real token t - 1

  def loss_and_grads(config):
    graphdef, state = nnx.split(init_model(config, seed=1))
    per_token = lambda state: logprobs.token_logprobs(nnx.merge(graphdef, state), ids, jnp.asarray(valid))
    loss = lambda state: (per_token(state) * scored).sum()
    return jax.jit(jax.value_and_grad(loss))(state)

  for name, scan in (("gemma3", True), ("llama", False)):
    xla = model_config.from_hf(tiny_hf_configs[name], scan_layers=scan, remat=not scan)
    (value, grads), (expected, expected_grads) = map(
        loss_and_grads, (dataclasses.replace(xla, attention="splash"), xla))
    np.testing.assert_allclose(value, expected, rtol=1e-5, err_msg=name)
    for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(expected_grads)):
      np.testing.assert_allclose(a, b, atol=2e-5, rtol=1e-4, err_msg=name)


def test_causal_blocks_split_the_queries():
  """Blocks of >= `block` rows, at most max_blocks: the traced program holds one score product per block."""
  q = k = v = jnp.zeros((1, 40, 2, 4))
  mask = jnp.ones((1, 1, 40, 40), bool)
  for block, max_blocks, n in ((128, 4, 1), (20, 4, 2), (10, 4, 4), (3, 4, 4), (10, 2, 2)):
    fn = lambda q, k, v: attention.causal_blocks_attention(q, k, v, mask, 1.0, block=block, max_blocks=max_blocks)
    jaxpr = str(jax.make_jaxpr(fn)(q, k, v))
    assert jaxpr.count("exp ") == n, (block, max_blocks)


def test_vocab_logits_gradient_equals_a_plain_matmul():
  rng = np.random.default_rng(0)
  hidden, weight, cotangent = (jnp.asarray(rng.normal(size=s)) for s in ((7, 5), (5, 11), (7, 11)))
  out, vjp = jax.vjp(vocab_logits, hidden, weight)
  plain_out, plain_vjp = jax.vjp(jnp.matmul, hidden, weight)
  np.testing.assert_allclose(out, plain_out, rtol=1e-12)
  for got, want in zip(vjp(cotangent), plain_vjp(cotangent)):
    np.testing.assert_allclose(got, want, rtol=1e-12)
