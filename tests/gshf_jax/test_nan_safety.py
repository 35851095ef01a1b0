"""NaN and out-of-range inputs: a public core function raises ValueError naming the argument when its
inputs are concrete, and propagates NaN under jit; it never turns them into a plausible number (0, theta
= 0, another context's features) or a valid-looking index."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import bandit_sim as b
import gshf_jax as g
from bandit_sim import offline

REF = jax.nn.log_softmax(jnp.array([[0.0, 1.0, -1.0], [0.5, 0.0, 0.2]]))


@given(row=st.integers(0, 1), col=st.integers(0, 2))
def test_kl_and_value_of_a_policy_with_nan_are_nan(row, col):
  logp = REF.at[row, col].set(jnp.nan)
  kl = g.kl(logp, REF)
  assert np.isnan(kl[row]) and np.isfinite(kl[1 - row])  # only the affected context
  assert np.isnan(g.kl(REF, logp)[row])
  assert np.isnan(g.regularized_value(logp, REF, jnp.ones(3), 0.5)[row])
  assert np.isnan(jax.jit(g.kl)(logp, REF)[row])
  assert g.kl(REF, REF)[row] == 0.0  # the finite case is untouched


def test_elliptical_norm_raises_eagerly_and_is_nan_under_jit():
  cov = jnp.array([[2.0, 0.3], [0.3, 1.0]])
  v = jnp.array([[1.0, 2.0], [jnp.nan, 0.0]])
  with pytest.raises(ValueError, match="v holds NaN"):
    g.elliptical_norm(v, cov)
  out = jax.jit(g.elliptical_norm)(v, cov)
  assert np.isfinite(out[0]) and np.isnan(out[1])
  indefinite = jnp.array([[1.0, 0.0], [0.0, -1.0]])
  with pytest.raises(ValueError, match="cov must be positive definite; its least eigenvalue is -1"):
    g.elliptical_norm(v[:1], indefinite)
  assert np.all(np.isnan(jax.jit(g.elliptical_norm)(v[:1], indefinite)))
  with pytest.raises(ValueError, match="cov must be finite"):
    g.elliptical_norm(v[:1], cov.at[0, 0].set(jnp.inf))


def test_bt_mle_with_a_nan_feature_raises_or_is_nan_never_zero():
  dphi = jax.random.normal(jax.random.key(0), (50, 3)).at[7, 1].set(jnp.nan)
  y = (jnp.arange(50) % 2).astype(float)
  with pytest.raises(ValueError, match=r"dphi must be finite; non-finite at \[\[7, 1\]\]"):
    g.bt_mle(dphi, y, 2.0)
  theta = jax.jit(lambda d: g.bt_mle(d, y, 2.0))(dphi)
  assert np.all(np.isnan(theta))
  assert np.all(np.isfinite(jax.jit(lambda d: g.bt_mle(d, y, 2.0))(jnp.nan_to_num(dphi))))


def test_rso_with_nan_rewards_raises_or_accepts_nothing():
  rewards = jnp.array([0.1, jnp.nan, 0.5, 0.2])
  with pytest.raises(ValueError, match="rewards holds NaN"):
    g.rso_rejection_sample(jax.random.key(0), rewards, 0.5, 2)
  out = jax.jit(lambda r: g.rso_rejection_sample(jax.random.key(0), r, 0.5, 2))(rewards)
  assert np.all(np.asarray(out) == -1)  # the documented "unfilled" marker, not a candidate index
  valid = jnp.array([True, False, True, True])  # NaN on an invalid candidate is fine
  assert set(np.asarray(g.rso_rejection_sample(jax.random.key(0), rewards, 0.5, 2, valid=valid))) <= {0, 2, 3}


@pytest.mark.parametrize("loss", [g.dpo_loss, g.hinge_loss, g.ipo_loss])
def test_losses_refuse_a_column_against_a_vector(loss):
  vector, column = jnp.zeros(3), jnp.zeros((3, 1))
  with pytest.raises(ValueError, match=r"same number of dimensions; got pi_c \[3\], pi_r \[3, 1\]"):
    loss(vector, column, vector, vector, 0.1)
  assert loss(vector, vector, vector, vector, 0.1).shape == (3,)
  assert loss(column, column.T, column, column.T, 0.1).shape == (3, 3)  # a deliberate outer product
  with pytest.raises(ValueError, match="same number of dimensions"):
    g.reward_loss(vector, column)


def test_bandit_preferences_with_out_of_range_indices_raise_or_give_nan():
  env = b.make_linear_bandit(jax.random.key(0), num_contexts=4, num_actions=5, dim=3, bound=1.0, eta=0.5)
  data = b.collect_preferences(jax.random.key(1), env, env.ref_logp, env.ref_logp, 20)
  bad = data._replace(ctx=data.ctx.at[3].set(99))
  with pytest.raises(ValueError, match=r"data.ctx must index \[0, 4\); got \[99\]"):
    offline.fit_offline(env, bad, lam=1.0)
  with pytest.raises(ValueError, match=r"data.a2 must index \[0, 5\); got \[-1\]"):
    b.feature_differences(env, data._replace(a2=data.a2.at[0].set(-1)))
  with pytest.raises(ValueError, match=r"data.y must index \[0, 2\)"):
    offline.offline_dpo(env, data._replace(y=data.y.at[0].set(3)), steps=2)
  dphi = jax.jit(b.feature_differences)(env, bad)
  assert np.all(np.isnan(dphi[3])) and np.all(np.isfinite(np.delete(np.asarray(dphi), 3, axis=0)))
  with pytest.raises(ValueError, match=r"ctx must index \[0, 4\)"):
    b.collect_preferences(jax.random.key(2), env, env.ref_logp, env.ref_logp, 3, ctx=jnp.array([0, 4, 1]))
