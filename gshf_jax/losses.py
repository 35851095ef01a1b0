"""Pairwise preference losses on per-example summed log-probabilities (Section 5, Eq. (9), (10)), and the
registry every caller (the bandit's DPO / RSO, the LLM trainers, config validation) picks them from.

`pi_c, pi_r` are log pi_theta(a_w | x), log pi_theta(a_l | x) of the chosen and rejected responses (summed
over response tokens for an LLM), `ref_c, ref_r` the same under the reference policy pi0, and `beta` the
KL coefficient of the DPO objective (eta in the paper). Every pairwise loss has the signature

  loss(pi_c, pi_r, ref_c, ref_r, beta, *, margin=None, label_smoothing=0.0) -> per-example losses

and raises a ValueError naming an option it cannot honour (`check_options` tells before any work). All
losses are per example (shape of the broadcast inputs); average them yourself.
"""

from typing import Callable

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from gshf_jax import _checks


def log_ratio_margin(pi_c: ArrayLike, pi_r: ArrayLike, ref_c: ArrayLike, ref_r: ArrayLike) -> jax.Array:
  """h = (log pi(a_w) - log pi0(a_w)) - (log pi(a_l) - log pi0(a_l)), the implicit reward gap / eta.
  The non-scalar inputs must have one number of dimensions (a [n] against an [n, 1] is refused: it would
  broadcast to an [n, n] outer product)."""
  _checks.check_same_rank("pi_c", pi_c, "pi_r", pi_r, "ref_c", ref_c, "ref_r", ref_r)
  return (jnp.asarray(pi_c) - ref_c) - (jnp.asarray(pi_r) - ref_r)


def dpo_loss(pi_c: ArrayLike, pi_r: ArrayLike, ref_c: ArrayLike, ref_r: ArrayLike, beta: ArrayLike, *,
    margin: ArrayLike | None = None, label_smoothing: float = 0.0) -> jax.Array:
  """DPO loss, Eq. (9); with a margin, the pessimistic DPO of Proposition 5.1, Eq. (10).

    z = beta * h + margin,   h = (pi_c - ref_c) - (pi_r - ref_r)
    loss = -(1 - ls) * log_sigmoid(z) - ls * log_sigmoid(-z)

  Eq. (10) is `margin = beta_u * (Gamma(x, a_w) - Gamma(x, a_l))`; Eq. (9) is no margin. Label smoothing
  `ls` is the conservative DPO of Mitchell (2023): the label is flipped with probability ls; ls = 0 is
  plain DPO.

  Args:
    pi_c, pi_r, ref_c, ref_r: [...] log-probabilities.
    beta: KL coefficient, > 0.
    margin: [...] or scalar added to z, or None.
    label_smoothing: in [0, 0.5].

  Returns:
    [...] per-example losses.
  """
  _checks.check_positive("beta", beta)
  _checks.check_in_range("label_smoothing", label_smoothing, 0.0, 0.5)
  _checks.check_same_rank("pi_c", pi_c, "margin", margin)
  z = beta * log_ratio_margin(pi_c, pi_r, ref_c, ref_r) + (0.0 if margin is None else margin)
  return -(1.0 - label_smoothing) * jax.nn.log_sigmoid(z) - label_smoothing * jax.nn.log_sigmoid(-z)


def hinge_loss(pi_c: ArrayLike, pi_r: ArrayLike, ref_c: ArrayLike, ref_r: ArrayLike, beta: ArrayLike, *,
    margin: ArrayLike | None = None, label_smoothing: float = 0.0) -> jax.Array:
  """RSO's hinge loss (Liu et al. 2023, SLiC-style): relu(1 - z) with z = beta * h + margin as in dpo_loss.
  No label smoothing."""
  check_options("hinge", label_smoothing=label_smoothing)
  _checks.check_positive("beta", beta)
  _checks.check_same_rank("pi_c", pi_c, "margin", margin)
  z = beta * log_ratio_margin(pi_c, pi_r, ref_c, ref_r) + (0.0 if margin is None else margin)
  return jax.nn.relu(1.0 - z)


def ipo_loss(pi_c: ArrayLike, pi_r: ArrayLike, ref_c: ArrayLike, ref_r: ArrayLike, beta: ArrayLike, *,
    margin: ArrayLike | None = None, label_smoothing: float = 0.0) -> jax.Array:
  """IPO loss (Azar et al. 2023): (h - 1 / (2 * beta))**2 with h = (pi_c - ref_c) - (pi_r - ref_r).
  No margin, no label smoothing."""
  check_options("ipo", margin=margin is not None, label_smoothing=label_smoothing)
  _checks.check_positive("beta", beta)
  return (log_ratio_margin(pi_c, pi_r, ref_c, ref_r) - 1.0 / (2.0 * beta)) ** 2


# name -> (loss, the options it honours besides beta)
PAIRWISE_LOSSES: dict[str, tuple[Callable, frozenset]] = {
    "dpo": (dpo_loss, frozenset({"margin", "label_smoothing"})),
    "hinge": (hinge_loss, frozenset({"margin"})),
    "ipo": (ipo_loss, frozenset()),
}


def check_options(name: str, *, margin: bool = False, label_smoothing: float = 0.0) -> None:
  """ValueError when `name` is not a registered loss, or cannot honour a requested option: a margin
  (pessimistic DPO's uncertainty term) or nonzero label smoothing."""
  if name not in PAIRWISE_LOSSES:
    raise ValueError(f"unknown pairwise loss {name!r}; registered: {sorted(PAIRWISE_LOSSES)}")
  honoured = PAIRWISE_LOSSES[name][1]
  if margin and "margin" not in honoured:
    raise ValueError(f"the {name} loss takes no margin (pessimistic DPO's uncertainty term); "
                     f"losses that do: {sorted(k for k, (_, o) in PAIRWISE_LOSSES.items() if 'margin' in o)}")
  if label_smoothing and "label_smoothing" not in honoured:
    raise ValueError(f"the {name} loss takes no label_smoothing (got {label_smoothing}); losses that do: "
                     f"{sorted(k for k, (_, o) in PAIRWISE_LOSSES.items() if 'label_smoothing' in o)}")


def pairwise_loss(name: str) -> Callable:
  """The registered pairwise loss called `name` (ValueError listing the registered names otherwise)."""
  check_options(name)
  return PAIRWISE_LOSSES[name][0]


def reward_loss(r_c: ArrayLike, r_r: ArrayLike) -> jax.Array:
  """Bradley-Terry negative log-likelihood of Eq. (3) for one labelled pair: -log_sigmoid(r_c - r_r)."""
  _checks.check_same_rank("r_c", r_c, "r_r", r_r)
  return -jax.nn.log_sigmoid(jnp.asarray(r_c) - r_r)
