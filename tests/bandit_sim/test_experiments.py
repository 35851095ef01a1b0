"""The experiments' statistics and equal-information baselines against independent computations."""

import jax
import jax.numpy as jnp
import numpy as np

import bandit_sim as b
import gshf_jax as g
from bandit_sim import offline, online
from bandit_sim.experiments import _common


def test_equal_information_baseline_selects_by_the_shared_validation_and_ends_on_all_data():
  env = b.make_linear_bandit(jax.random.key(0), num_contexts=4, num_actions=5, dim=3, bound=2.0, eta=0.5)
  d_off = b.collect_preferences(jax.random.key(1), env, env.ref_logp, env.ref_logp, 10)
  k_data, k_val = jax.random.key(2), jax.random.key(3)
  T, m = 3, 8
  selected, all_data, data = jax.jit(lambda kd, kv: _common.selected_offline_only(
      kd, kv, env, env.ref_logp, d_off, T, m))(k_data, k_val)
  # the policy on all the data is online.offline_only's on the same draws
  logp, same = online.offline_only(k_data, env, num_queries=T * m, behaviour_logp=env.ref_logp, offline_data=d_off)
  for u, v in zip(data, same):
    np.testing.assert_array_equal(u, v)
  np.testing.assert_allclose(all_data, b.suboptimality(env, logp), atol=1e-9)
  # the selected one is the best of the T prefixes on the validation estimate Algorithm 2 uses
  @jax.jit
  def prefix(t):  # the policy on D_off and the first t * m new pairs, and its validation estimate
    dphi = b.feature_differences(env, data)
    logp = offline.gibbs_class_logp(env, g.bt_mle(dphi, data.y, env.bound, jnp.arange(10 + T * m) < 10 + t * m))
    return b.suboptimality(env, logp), online.validation_value(k_val, env, logp, 1000)

  subopts, values = zip(*(prefix(t) for t in range(1, T + 1)))
  np.testing.assert_allclose(selected, subopts[int(np.argmax(values))], atol=1e-9)
