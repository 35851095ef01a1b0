"""Pairwise preference losses on per-example summed log-probabilities (Section 5, Eq. (9), (10)).

`pi_c, pi_r` are log pi_theta(a_w | x), log pi_theta(a_l | x) of the chosen and rejected responses (summed
over response tokens for an LLM), `ref_c, ref_r` the same under the reference policy pi0. All losses are
per example (shape of the broadcast inputs); average them yourself.
"""

import jax
import jax.numpy as jnp

from gshf_jax import _checks


def log_ratio_margin(pi_c, pi_r, ref_c, ref_r):
  """h = (log pi(a_w) - log pi0(a_w)) - (log pi(a_l) - log pi0(a_l)), the implicit reward gap / eta."""
  return (jnp.asarray(pi_c) - ref_c) - (jnp.asarray(pi_r) - ref_r)


def dpo_loss(pi_c, pi_r, ref_c, ref_r, beta, *, margin=0.0, label_smoothing=0.0):
  """DPO loss, Eq. (9); with a margin, the pessimistic DPO of Proposition 5.1, Eq. (10).

    z = beta * h + margin,   h = (pi_c - ref_c) - (pi_r - ref_r)
    loss = -(1 - ls) * log_sigmoid(z) - ls * log_sigmoid(-z)

  Eq. (10) is `margin = beta_u * (Gamma(x, a_w) - Gamma(x, a_l))`; Eq. (9) is `margin = 0`. `beta` is the
  KL coefficient (eta in the paper). Label smoothing `ls` is the conservative DPO of Mitchell (2023):
  the label is flipped with probability ls; ls = 0 is plain DPO.

  Args:
    pi_c, pi_r, ref_c, ref_r: [...] log-probabilities.
    beta: > 0.
    margin: [...] or scalar, added to z.
    label_smoothing: in [0, 0.5].

  Returns:
    [...] per-example losses.
  """
  _checks.check_positive("beta", beta)
  _checks.check_in_range("label_smoothing", label_smoothing, 0.0, 0.5)
  z = beta * log_ratio_margin(pi_c, pi_r, ref_c, ref_r) + margin
  return -(1.0 - label_smoothing) * jax.nn.log_sigmoid(z) - label_smoothing * jax.nn.log_sigmoid(-z)


def hinge_loss(pi_c, pi_r, ref_c, ref_r, beta, *, margin=0.0):
  """RSO's hinge loss (Liu et al. 2023, SLiC-style): relu(1 - z) with z = beta * h + margin as in dpo_loss."""
  _checks.check_positive("beta", beta)
  z = beta * log_ratio_margin(pi_c, pi_r, ref_c, ref_r) + margin
  return jax.nn.relu(1.0 - z)


def ipo_loss(pi_c, pi_r, ref_c, ref_r, beta):
  """IPO loss (Azar et al. 2023): (h - 1 / (2 * beta))**2 with h = (pi_c - ref_c) - (pi_r - ref_r)."""
  _checks.check_positive("beta", beta)
  return (log_ratio_margin(pi_c, pi_r, ref_c, ref_r) - 1.0 / (2.0 * beta)) ** 2


def reward_loss(r_c, r_r):
  """Bradley-Terry negative log-likelihood of Eq. (3) for one labelled pair: -log_sigmoid(r_c - r_r)."""
  return -jax.nn.log_sigmoid(jnp.asarray(r_c) - r_r)
