"""gshf_jax.gibbs against closed forms, Lemma 2.4 and the maximizing property of Definition 2.2."""

import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given

from gshf_jax import gibbs_logprobs, kl, regularized_value


def random_logp(rng, shape, zeros=0):
  """Random log-probabilities; the first `zeros` actions of each row get probability 0."""
  p = rng.dirichlet(np.ones(shape[-1]), size=shape[:-1])
  p[..., :zeros] = 0.0
  p /= p.sum(-1, keepdims=True)
  with np.errstate(divide="ignore"):
    return np.log(p)


def test_gibbs_matches_normalized_tilt():
  rng = np.random.default_rng(0)
  ref = random_logp(rng, (5, 7), zeros=2)
  reward, eta = rng.normal(size=(5, 7)), 0.37
  tilt = np.exp(ref) * np.exp(reward / eta)
  expected = tilt / tilt.sum(-1, keepdims=True)
  got = np.exp(gibbs_logprobs(ref, reward, eta))
  np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-15)
  assert np.all(got[:, :2] == 0.0)  # pi0's zeros stay zero


@given(seed=st.integers(0, 2**31), k=st.integers(2, 8), zeros=st.integers(0, 1),
       eta=st.floats(1e-2, 1e2), scale=st.floats(0.1, 5.0))
def test_gibbs_maximizes_regularized_value(seed, k, zeros, eta, scale):
  rng = np.random.default_rng(seed)
  ref = random_logp(rng, (k,), zeros=zeros)
  reward = scale * rng.normal(size=k)
  best = regularized_value(gibbs_logprobs(ref, reward, eta), ref, reward, eta)
  for other in (random_logp(rng, (k,), zeros=zeros), random_logp(rng, (k,), zeros=rng.integers(0, k)), ref):
    assert best >= regularized_value(other, ref, reward, eta) - 1e-10 * (1 + abs(best))


def test_lemma_2_4_identity():
  """E_x[E_pi r - E_pihat r + eta KL(pihat||pi0) - eta KL(pi||pi0)] = -eta E_x KL(pi||pihat)."""
  rng = np.random.default_rng(1)
  for eta in (0.05, 1.0, 20.0):
    ref = random_logp(rng, (6, 9))
    reward = rng.normal(size=(6, 9))
    pi = random_logp(rng, (6, 9))
    d0 = rng.dirichlet(np.ones(6))
    pihat = gibbs_logprobs(ref, reward, eta)
    lhs = (np.exp(pi) * reward).sum(-1) - (np.exp(pihat) * reward).sum(-1) \
        + eta * kl(pihat, ref) - eta * kl(pi, ref)
    rhs = -eta * kl(pi, pihat)
    np.testing.assert_allclose(lhs, rhs, rtol=0, atol=1e-10)
    np.testing.assert_allclose(d0 @ lhs, d0 @ rhs, rtol=0, atol=1e-10)


def test_kl_zero_probability_entries():
  log = lambda v: np.log(np.array(v, dtype=np.float64))
  with np.errstate(divide="ignore"):
    assert float(kl(log([0.5, 0.5, 0.0]), log([0.25, 0.25, 0.5]))) == pytest.approx(np.log(2), abs=1e-15)
    assert float(kl(log([0.5, 0.5, 0.0]), log([0.5, 0.5, 0.0]))) == 0.0
    assert float(kl(log([0.5, 0.0, 0.5]), log([0.5, 0.5, 0.0]))) == np.inf
    # Gradient through a policy with a zero entry stays finite.
    logits = jnp.array([0.3, -0.2, -jnp.inf])
    q = jnp.array(log([0.2, 0.3, 0.5]))
    grad = jax.grad(lambda z: kl(jax.nn.log_softmax(z), q))(logits)
  assert np.all(np.isfinite(grad[:2])) and grad[2] == 0.0
  p = np.exp([0.3, -0.2]) / np.exp([0.3, -0.2]).sum()
  assert np.allclose(grad[:2], p * (np.log(p / [0.2, 0.3]) - np.sum(p * np.log(p / [0.2, 0.3]))))


def test_kl_matches_scipy_entropy():
  from scipy.stats import entropy
  rng = np.random.default_rng(2)
  p, q = random_logp(rng, (4, 6)), random_logp(rng, (4, 6))
  np.testing.assert_allclose(kl(p, q), entropy(np.exp(p), np.exp(q), axis=-1), rtol=1e-12)


def test_float32_dtype_jit_and_vmap_over_eta():
  rng = np.random.default_rng(3)
  ref = jnp.asarray(random_logp(rng, (3, 5)), jnp.float32)
  reward = jnp.asarray(rng.normal(size=(3, 5)), jnp.float32)
  out = jax.jit(gibbs_logprobs)(ref, reward, 0.5)
  assert out.dtype == jnp.float32
  assert regularized_value(out, ref, reward, 0.5).dtype == jnp.float32
  etas = jnp.array([0.1, 1.0, 10.0], jnp.float32)
  batched = jax.vmap(gibbs_logprobs, in_axes=(None, None, 0))(ref, reward, etas)
  assert batched.shape == (3, 3, 5)
  np.testing.assert_allclose(batched[1], gibbs_logprobs(ref, reward, 1.0), rtol=1e-6)
  # Large eta tends to pi0, small eta to the argmax.
  np.testing.assert_allclose(jnp.exp(gibbs_logprobs(ref, reward, 1e6)), jnp.exp(ref), atol=1e-5)
  greedy = jnp.exp(gibbs_logprobs(ref, reward, 1e-4))
  np.testing.assert_allclose(greedy.max(-1), 1.0, atol=1e-5)
  assert np.all(greedy.argmax(-1) == reward.argmax(-1))
