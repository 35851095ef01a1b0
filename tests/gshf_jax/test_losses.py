"""DPO-family losses: hand-computed values, and the population optimum of DPO / pessimistic DPO on a
tabular problem with full coverage equals the Gibbs policy (Lemma E.1, Proposition 5.1)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.optimize import minimize

from gshf_jax import (
  PAIRWISE_LOSSES,
  bt_log_likelihood,
  check_options,
  dpo_loss,
  gibbs_logprobs,
  hinge_loss,
  ipo_loss,
  pairwise_loss,
  reward_loss,
)


def log_sigmoid(z):
  return -math.log1p(math.exp(-z))


def test_hand_computed_values():
  # h = (-1 - -1.5) - (-2 - -1.5) = 1.0
  args = (-1.0, -2.0, -1.5, -1.5)
  assert float(dpo_loss(*args, 0.1)) == pytest.approx(-log_sigmoid(0.1), rel=1e-14)
  assert float(dpo_loss(*args, 0.1, margin=0.3)) == pytest.approx(-log_sigmoid(0.4), rel=1e-14)
  assert float(dpo_loss(*args, 0.1, label_smoothing=0.2)) == pytest.approx(
      -0.8 * log_sigmoid(0.1) - 0.2 * log_sigmoid(-0.1), rel=1e-14)
  assert float(hinge_loss(*args, 0.1)) == pytest.approx(0.9, rel=1e-14)
  assert float(hinge_loss(*args, 2.0)) == 0.0
  assert float(hinge_loss(*args, 0.1, margin=-0.5)) == pytest.approx(1.4, rel=1e-14)
  assert float(ipo_loss(*args, 0.1)) == pytest.approx((1.0 - 5.0) ** 2, rel=1e-14)
  assert float(ipo_loss(*args, 0.5)) == 0.0  # the IPO target h = 1 / (2 beta)
  assert float(reward_loss(0.7, -0.2)) == pytest.approx(-log_sigmoid(0.9), rel=1e-14)


def test_losses_broadcast_and_keep_float32():
  rng = np.random.default_rng(0)
  pc, pr, rc, rr = (jnp.asarray(rng.normal(size=8), jnp.float32) for _ in range(4))
  for loss in (dpo_loss(pc, pr, rc, rr, 0.1, margin=jnp.ones(8, jnp.float32)),
               hinge_loss(pc, pr, rc, rr, 0.1), ipo_loss(pc, pr, rc, rr, 0.1), reward_loss(pc, pr)):
    assert loss.shape == (8,) and loss.dtype == jnp.float32
  # label_smoothing = 0.5 makes the loss symmetric in chosen/rejected.
  np.testing.assert_allclose(dpo_loss(pc, pr, rc, rr, 0.3, label_smoothing=0.5),
                             dpo_loss(pr, pc, rr, rc, 0.3, label_smoothing=0.5), rtol=1e-6)


def test_reward_loss_is_the_bt_negative_log_likelihood():
  rng = np.random.default_rng(1)
  theta, phi_w, phi_l = rng.normal(size=3), rng.normal(size=(10, 3)), rng.normal(size=(10, 3))
  total = float(jnp.sum(reward_loss(phi_w @ theta, phi_l @ theta)))
  assert total == pytest.approx(-float(bt_log_likelihood(theta, phi_w - phi_l, np.ones(10))), rel=1e-12)


def population_dpo_optimum(ref, reward, eta, bonus=None):
  """Minimize the population DPO loss over tabular policies pi_theta = softmax(theta[x]).

  Every ordered pair (a, b), a < b, appears with both labels, weighted by the BT probabilities of r;
  with `bonus` (Gamma) the margin of Eq. (10), Gamma(x, a_w) - Gamma(x, a_l), is added."""
  x, k = ref.shape
  a, b = np.triu_indices(k, 1)
  p_ab = 1 / (1 + np.exp(-(reward[:, a] - reward[:, b])))
  gam = np.zeros_like(reward) if bonus is None else bonus

  def loss(flat):
    logp = jax.nn.log_softmax(flat.reshape(x, k), axis=-1)
    pa, pb, ra, rb = logp[:, a], logp[:, b], ref[:, a], ref[:, b]
    a_wins = dpo_loss(pa, pb, ra, rb, eta, margin=gam[:, a] - gam[:, b])
    b_wins = dpo_loss(pb, pa, rb, ra, eta, margin=gam[:, b] - gam[:, a])
    return jnp.sum(p_ab * a_wins + (1 - p_ab) * b_wins)

  value_and_grad = jax.jit(jax.value_and_grad(loss))
  res = minimize(lambda t: [np.asarray(v) for v in value_and_grad(t)], np.zeros(x * k), jac=True,
                 method="BFGS", options={"gtol": 1e-11, "maxiter": 2000})
  return jax.nn.log_softmax(res.x.reshape(x, k), axis=-1)


@pytest.mark.parametrize("eta", [0.5, 2.0])
def test_dpo_population_optimum_is_gibbs_of_bt_reward(eta):
  rng = np.random.default_rng(2)
  ref = np.log(rng.dirichlet(np.ones(5), size=3))
  reward = rng.normal(size=(3, 5))
  np.testing.assert_allclose(np.exp(population_dpo_optimum(ref, reward, eta)),
                             np.exp(gibbs_logprobs(ref, reward, eta)), atol=1e-6)


def test_pessimistic_dpo_population_optimum_is_gibbs_of_penalized_reward():
  """Proposition 5.1: the margin Gamma(a_w) - Gamma(a_l) yields the Gibbs policy of r - Gamma."""
  rng = np.random.default_rng(3)
  ref = np.log(rng.dirichlet(np.ones(4), size=2))
  reward, bonus, eta = rng.normal(size=(2, 4)), rng.uniform(0, 1, size=(2, 4)), 0.7
  got = np.exp(population_dpo_optimum(ref, reward, eta, bonus))
  np.testing.assert_allclose(got, np.exp(gibbs_logprobs(ref, reward - bonus, eta)), atol=1e-6)
  assert not np.allclose(got, np.exp(gibbs_logprobs(ref, reward, eta)), atol=1e-3)


def test_registry_has_one_signature_and_refuses_options_a_loss_cannot_honour():
  args = (*(np.array([v]) for v in (-1.0, -2.0, -1.5, -1.5)), 0.1)  # [1]: some losses sort over the batch
  lengths = (np.array([3.0]), np.array([4.0]))
  for name, spec in PAIRWISE_LOSSES.items():
    assert pairwise_loss(name) is spec.loss
    smoothing = 0.1 if name == "exo_pair" else 0.0  # EXO's target needs eps > 0
    plain = float(np.sum(spec.loss(*args, margin=None, label_smoothing=smoothing, lengths=lengths)))  # the shared signature
    assert np.isfinite(plain)
    if "margin" in spec.options:  # the margin reaches the loss: z = beta * h + margin
      assert float(np.sum(spec.loss(*args, margin=0.3, label_smoothing=smoothing, lengths=lengths))) != plain
    else:
      with pytest.raises(ValueError, match=f"the {name} loss takes no margin"):
        spec.loss(*args, margin=0.3, lengths=lengths)
    if "label_smoothing" in spec.options:
      assert float(np.sum(spec.loss(*args, label_smoothing=0.2, lengths=lengths))) != plain
    else:
      with pytest.raises(ValueError, match=f"the {name} loss takes no label_smoothing"):
        spec.loss(*args, label_smoothing=0.2, lengths=lengths)
  with pytest.raises(ValueError, match="unknown pairwise loss 'kto'; registered: \\['aot', 'aot_unpaired', 'apo_down'"):
    pairwise_loss("kto")
  check_options("dpo", margin=True, label_smoothing=0.5)  # DPO honours both
