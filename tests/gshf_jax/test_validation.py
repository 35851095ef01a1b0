"""Bad arguments raise ValueError naming the argument (docs/architecture.md)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gshf_jax as g

K3 = np.zeros(3)
LOG3 = np.log(np.ones(3) / 3)
PREF = np.array([[0.5, 0.7, 0.2], [0.3, 0.5, 0.6], [0.8, 0.4, 0.5]])
KEY = jax.random.key(0)

CASES = [
    ("eta", lambda: g.gibbs_logprobs(LOG3, K3, 0.0)),
    ("eta", lambda: g.gibbs_logprobs(LOG3, K3, -1.0)),
    ("eta", lambda: g.regularized_value(LOG3, LOG3, K3, float("nan"))),
    ("ref_logp, reward", lambda: g.gibbs_logprobs(LOG3, np.zeros(4), 1.0)),
    ("logp, logq", lambda: g.kl(LOG3, np.zeros(2))),
    ("bound", lambda: g.gamma(0.0)),
    ("bound", lambda: g.bt_mle(np.zeros((4, 2)), np.zeros(4), -1.0)),
    ("y", lambda: g.bt_mle(np.zeros((4, 2)), np.zeros(5), 1.0)),
    ("y", lambda: g.bt_mle(np.zeros((4, 2)), np.full(4, 2.0), 1.0)),
    ("theta", lambda: g.bt_log_likelihood(np.zeros(3), np.zeros((4, 2)), np.zeros(4))),
    ("mask", lambda: g.bt_log_likelihood(np.zeros(2), np.zeros((4, 2)), np.zeros(4), np.ones(3))),
    ("lam", lambda: g.covariance(np.zeros((4, 2)), 0.0)),
    ("v [..., d]", lambda: g.elliptical_norm(np.zeros(3), np.eye(2))),
    ("delta", lambda: g.confidence_radius(3, 1.5, 1.0, 1.0)),
    ("dim", lambda: g.confidence_radius(0, 0.1, 1.0, 1.0)),
    ("beta", lambda: g.dpo_loss(0.0, 0.0, 0.0, 0.0, 0.0)),
    ("label_smoothing", lambda: g.dpo_loss(0.0, 0.0, 0.0, 0.0, 0.1, label_smoothing=0.7)),
    ("beta", lambda: g.hinge_loss(0.0, 0.0, 0.0, 0.0, -0.1)),
    ("beta", lambda: g.ipo_loss(0.0, 0.0, 0.0, 0.0, 0.0)),
    ("num_samples", lambda: g.rso_rejection_sample(KEY, K3, 1.0, 4)),
    ("num_samples", lambda: g.rso_rejection_sample(KEY, K3, 1.0, 3, valid=np.array([True, True, False]))),
    ("num_samples", lambda: g.rso_rejection_sample(KEY, K3, 1.0, 0)),
    ("num_samples", lambda: g.rso_pairs(KEY, K3, 1.0, 2)),
    ("beta", lambda: g.rso_rejection_sample(KEY, K3, 0.0, 2)),
    ("rewards", lambda: g.rso_rejection_sample(KEY, np.zeros((2, 3)), 1.0, 2)),
    ("eta", lambda: g.acceptance_rate(LOG3, K3, 0.0)),
    ("num_steps", lambda: g.multistep_etas(0.1, 0)),
    ("eta", lambda: g.multistep_etas(-0.1, 3)),
    ("n", lambda: g.best_of_n_logprobs(LOG3, K3, 0)),
    ("n", lambda: g.best_of_n_logprobs(LOG3, K3, 2.5)),
    ("eta", lambda: g.nash_equilibrium(LOG3, PREF, 0.0)),
    ("pref", lambda: g.nash_equilibrium(LOG3, np.full((3, 3), 0.6), 1.0)),
    ("pref", lambda: g.duality_gap(LOG3, LOG3, np.zeros((3, 2)), 1.0)),
    ("ref_logp", lambda: g.nash_equilibrium(np.zeros(4), PREF, 1.0)),
    ("context_probs", lambda: g.game_value(LOG3, LOG3, LOG3, PREF, 1.0, context_probs=np.ones(2))),
    ("max_iter", lambda: g.nash_equilibrium(LOG3, PREF, 1.0, max_iter=0)),
]


@pytest.mark.parametrize("name, call", CASES, ids=[f"{i}-{c[0]}" for i, c in enumerate(CASES)])
def test_bad_input_raises_value_error_naming_the_argument(name, call):
  with pytest.raises(ValueError, match=name.replace("[", r"\[").replace(".", r"\.")):
    call()


def test_traced_arguments_skip_value_checks_but_still_work():
  """Inside jit the value of eta is unknown; the function still compiles and computes."""
  out = jax.jit(g.gibbs_logprobs)(jnp.asarray(LOG3), jnp.arange(3.0), jnp.asarray(0.5))
  np.testing.assert_allclose(out, g.gibbs_logprobs(LOG3, np.arange(3.0), 0.5), rtol=1e-12)
