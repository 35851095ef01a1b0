"""Pairwise preference losses on per-example summed log-probabilities (Section 5, Eq. (9), (10)), TRL's
DPO loss family, reference-free SimPO and ORPO, and the registry every caller (the bandit's DPO / RSO, the
LLM trainers, config validation) picks them from.

`pi_c, pi_r` are log pi_theta(a_w | x), log pi_theta(a_l | x) of the chosen and rejected responses (summed
over response tokens for an LLM), `ref_c, ref_r` the same under the reference policy pi0, and `beta` the
KL coefficient of the DPO objective (eta in the paper). Every pairwise loss has the signature

  loss(pi_c, pi_r, ref_c, ref_r, beta, *, margin=None, label_smoothing=0.0, lengths=None, **its own options)

`lengths = (chosen_tokens, rejected_tokens)` are the responses' token counts, needed by the losses that
average over tokens. A loss raises a ValueError naming an option it cannot honour or an input it lacks
(`check_options` tells before any work). All losses are per example (shape of the broadcast inputs); the
batch mean is the training loss. `aot`, `aot_unpaired`, `sft` and `orpo` couple the examples of a batch
(sorting, or a token mean over the batch) and take 1-D inputs.

Each loss of TRL's DPOTrainer (1.16) is registered under TRL's `loss_type` name and computes what TRL
computes for it; where TRL departs from the loss's paper, the paper's form is the default and TRL's an
option (`ipo_loss(per_token=True)`).
"""

from typing import Callable, NamedTuple

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
             margin: ArrayLike | None = None, label_smoothing: float = 0.0, lengths=None) -> jax.Array:
  """DPO loss, Eq. (9); with a margin, the pessimistic DPO of Proposition 5.1, Eq. (10). TRL: "sigmoid".

    z = beta * h + margin,   h = (pi_c - ref_c) - (pi_r - ref_r)
    loss = -(1 - ls) * log_sigmoid(z) - ls * log_sigmoid(-z)

  Eq. (10) is `margin = beta_u * (Gamma(x, a_w) - Gamma(x, a_l))`; Eq. (9) is no margin. Label smoothing
  `ls` is the conservative DPO of Mitchell (2023): the label is flipped with probability ls; ls = 0 is
  plain DPO (TRL 1.16's "sigmoid" ignores label_smoothing; its "robust" and "aot" use it).

  Args:
    pi_c, pi_r, ref_c, ref_r: [...] log-probabilities.
    beta: KL coefficient, > 0.
    margin: [...] or scalar added to z, or None.
    label_smoothing: in [0, 0.5].
    lengths: not used.

  Returns:
    [...] per-example losses.
  """
  check_options("dpo", margin=margin is not None, label_smoothing=label_smoothing)
  _checks.check_positive("beta", beta)
  return smoothed_logistic(beta * log_ratio_margin(pi_c, pi_r, ref_c, ref_r) + _margin(pi_c, margin), label_smoothing)


def hinge_loss(pi_c: ArrayLike, pi_r: ArrayLike, ref_c: ArrayLike, ref_r: ArrayLike, beta: ArrayLike, *,
               margin: ArrayLike | None = None, label_smoothing: float = 0.0, lengths=None) -> jax.Array:
  """RSO's hinge loss (Liu et al. 2023, SLiC-style): relu(1 - z) with z = beta * h + margin as in dpo_loss.
  TRL: "hinge"."""
  check_options("hinge", margin=margin is not None, label_smoothing=label_smoothing)
  _checks.check_positive("beta", beta)
  return jax.nn.relu(1.0 - beta * log_ratio_margin(pi_c, pi_r, ref_c, ref_r) - _margin(pi_c, margin))


def ipo_loss(pi_c: ArrayLike, pi_r: ArrayLike, ref_c: ArrayLike, ref_r: ArrayLike, beta: ArrayLike, *,
             margin: ArrayLike | None = None, label_smoothing: float = 0.0, lengths=None,
             per_token: bool = False) -> jax.Array:
  """IPO loss (Azar et al. 2023, Eq. 17): (h - 1 / (2 * beta))**2 with h = (pi_c - ref_c) - (pi_r - ref_r).

  per_token=True is TRL's "ipo": each response's log-ratio is divided by its token count (`lengths`)
  before the difference, so the target 1 / (2 beta) does not scale with the responses' lengths."""
  check_options("ipo", margin=margin is not None, label_smoothing=label_smoothing, lengths=lengths is not None,
                per_token=per_token)
  _checks.check_positive("beta", beta)
  if per_token:
    n_c, n_r = _token_counts(lengths)
    h = (jnp.asarray(pi_c) - ref_c) / n_c - (jnp.asarray(pi_r) - ref_r) / n_r
  else:
    h = log_ratio_margin(pi_c, pi_r, ref_c, ref_r)
  return (h - 1.0 / (2.0 * beta)) ** 2


def exo_pair_loss(pi_c, pi_r, ref_c, ref_r, beta, *, margin=None, label_smoothing=0.0, lengths=None):
  """EXO-pref (Ji et al. 2024, Eq. 16), TRL's "exo_pair": KL(q || p) over {chosen, rejected} from
  q = softmax of beta * log pi/pi0 to the smoothed label p = (1 - eps, eps), eps = label_smoothing > 0:

    q_w (log q_w - log(1 - eps)) + q_l (log q_l - log eps),   q_w = sigmoid(beta * h)."""
  check_options("exo_pair", margin=margin is not None, label_smoothing=label_smoothing)
  _checks.check_positive("beta", beta)
  z = beta * log_ratio_margin(pi_c, pi_r, ref_c, ref_r)
  return (jax.nn.sigmoid(z) * (jax.nn.log_sigmoid(z) - jnp.log1p(-label_smoothing))
          + jax.nn.sigmoid(-z) * (jax.nn.log_sigmoid(-z) - jnp.log(label_smoothing)))


def nca_pair_loss(pi_c, pi_r, ref_c, ref_r, beta, *, margin=None, label_smoothing=0.0, lengths=None):
  """NCA (Chen et al. 2024), TRL's "nca_pair": with implicit rewards u = beta * log pi/pi0,
  -log_sigmoid(u_w) - (log_sigmoid(-u_w) + log_sigmoid(-u_l)) / 2."""
  check_options("nca_pair", margin=margin is not None, label_smoothing=label_smoothing)
  u_w, u_l = _implicit_rewards(pi_c, pi_r, ref_c, ref_r, beta)
  return -jax.nn.log_sigmoid(u_w) - 0.5 * jax.nn.log_sigmoid(-u_w) - 0.5 * jax.nn.log_sigmoid(-u_l)


def robust_loss(pi_c, pi_r, ref_c, ref_r, beta, *, margin=None, label_smoothing=0.0, lengths=None):
  """Robust DPO (Chowdhury et al. 2024), TRL's "robust": the unbiased loss under labels flipped with
  probability eps = label_smoothing in [0, 0.5):
  ((1 - eps) * -log_sigmoid(beta h) - eps * -log_sigmoid(-beta h)) / (1 - 2 eps)."""
  check_options("robust", margin=margin is not None, label_smoothing=label_smoothing)
  _checks.check_positive("beta", beta)
  z = beta * log_ratio_margin(pi_c, pi_r, ref_c, ref_r)
  eps = label_smoothing
  return (-(1 - eps) * jax.nn.log_sigmoid(z) + eps * jax.nn.log_sigmoid(-z)) / (1 - 2 * eps)


def bco_pair_loss(pi_c, pi_r, ref_c, ref_r, beta, *, margin=None, label_smoothing=0.0, lengths=None):
  """BCO on pairs (Jung et al. 2024), TRL's "bco_pair": the chosen response classified as good and the
  rejected as bad by their implicit rewards u = beta * log pi/pi0: -log_sigmoid(u_w) - log_sigmoid(-u_l)."""
  check_options("bco_pair", margin=margin is not None, label_smoothing=label_smoothing)
  u_w, u_l = _implicit_rewards(pi_c, pi_r, ref_c, ref_r, beta)
  return -jax.nn.log_sigmoid(u_w) - jax.nn.log_sigmoid(-u_l)


def sppo_hard_loss(pi_c, pi_r, ref_c, ref_r, beta, *, margin=None, label_smoothing=0.0, lengths=None):
  """SPPO with hard labels (Wu et al. 2024, Eq. 4.7 with P = 1 for the winner), TRL's "sppo_hard":
  (log pi/pi0 (a_w) - 1 / (2 beta))^2 + (log pi/pi0 (a_l) + 1 / (2 beta))^2."""
  check_options("sppo_hard", margin=margin is not None, label_smoothing=label_smoothing)
  _checks.check_positive("beta", beta)
  return ((jnp.asarray(pi_c) - ref_c - 0.5 / beta) ** 2 + (jnp.asarray(pi_r) - ref_r + 0.5 / beta) ** 2)


def aot_loss(pi_c, pi_r, ref_c, ref_r, beta, *, margin=None, label_smoothing=0.0, lengths=None):
  """AOT for paired data (Melnyk et al. 2024), TRL's "aot": the batch's policy log-ratios
  log pi(a_w) - log pi(a_l) and reference log-ratios, each sorted over the batch, matched rank by rank:
  the label-smoothed logistic loss of beta * (sorted policy - sorted reference). Inputs [n]."""
  check_options("aot", margin=margin is not None, label_smoothing=label_smoothing)
  return _rank_matched(jnp.asarray(pi_c) - pi_r, jnp.asarray(ref_c) - ref_r, beta, label_smoothing)


def aot_unpaired_loss(pi_c, pi_r, ref_c, ref_r, beta, *, margin=None, label_smoothing=0.0, lengths=None):
  """AOT for unpaired data, TRL's "aot_unpaired": the chosen log-ratios log pi/pi0 (a_w) and the rejected
  ones, each sorted over the batch, matched rank by rank: the label-smoothed logistic loss of
  beta * (sorted chosen - sorted rejected). Inputs [n]."""
  check_options("aot_unpaired", margin=margin is not None, label_smoothing=label_smoothing)
  return _rank_matched(jnp.asarray(pi_c) - ref_c, jnp.asarray(pi_r) - ref_r, beta, label_smoothing)


def _rank_matched(a, b, beta, label_smoothing):
  """The label-smoothed logistic loss of beta * (sort(a) - sort(b)) over a batch [n] (AOT's matching)."""
  _checks.check_positive("beta", beta)
  _checks.check_shape("the log-ratios", a, (None,))
  return smoothed_logistic(beta * (jnp.sort(a) - jnp.sort(b)), label_smoothing)


def apo_zero_loss(pi_c, pi_r, ref_c, ref_r, beta, *, margin=None, label_smoothing=0.0, lengths=None):
  """APO-zero (D'Oosterlinck et al. 2024, Eq. 7), TRL's "apo_zero", for chosen responses better than the
  model's own: raise chosen, lower rejected: (1 - sigmoid(u_w)) + sigmoid(u_l), u = beta * log pi/pi0."""
  check_options("apo_zero", margin=margin is not None, label_smoothing=label_smoothing)
  u_w, u_l = _implicit_rewards(pi_c, pi_r, ref_c, ref_r, beta)
  return 1.0 - jax.nn.sigmoid(u_w) + jax.nn.sigmoid(u_l)


def apo_down_loss(pi_c, pi_r, ref_c, ref_r, beta, *, margin=None, label_smoothing=0.0, lengths=None):
  """APO-down (Eq. 8), TRL's "apo_down", for chosen responses worse than the model's own: lower both,
  rejected more: sigmoid(u_w) + 1 - sigmoid(u_w - u_l), u = beta * log pi/pi0."""
  check_options("apo_down", margin=margin is not None, label_smoothing=label_smoothing)
  u_w, u_l = _implicit_rewards(pi_c, pi_r, ref_c, ref_r, beta)
  return jax.nn.sigmoid(u_w) + 1.0 - jax.nn.sigmoid(u_w - u_l)


def discopop_loss(pi_c, pi_r, ref_c, ref_r, beta, *, margin=None, label_smoothing=0.0, lengths=None,
                  tau: float = 0.05):
  """DiscoPOP (Chris Lu et al. 2024, Eq. 5), TRL's "discopop": with z = beta * h, a blend of the logistic
  and exponential losses weighted by sigmoid(z / tau): (1 - w) * -log_sigmoid(z) + w * exp(-z)."""
  check_options("discopop", margin=margin is not None, label_smoothing=label_smoothing, tau=tau)
  _checks.check_positive("beta", beta)
  z = beta * log_ratio_margin(pi_c, pi_r, ref_c, ref_r)
  w = jax.nn.sigmoid(z / tau)
  return -jax.nn.log_sigmoid(z) * (1 - w) + jnp.exp(-z) * w


def sft_loss(pi_c, pi_r, ref_c, ref_r, beta, *, margin=None, label_smoothing=0.0, lengths=None):
  """The chosen responses' negative log-likelihood per token over the batch, TRL's "sft" (combined with a
  preference loss through loss weights, as RPO): per-example values -pi_c * n / sum(chosen_tokens), whose
  batch mean is -sum(pi_c) / sum(chosen_tokens). Inputs [n]; needs `lengths`."""
  check_options("sft", margin=margin is not None, label_smoothing=label_smoothing, lengths=lengths is not None)
  pi_c = jnp.asarray(pi_c)
  _checks.check_shape("pi_c", pi_c, (None,))
  n_c, _ = _token_counts(lengths)
  return -pi_c * pi_c.shape[0] / jnp.sum(n_c)


def sigmoid_norm_loss(pi_c, pi_r, ref_c, ref_r, beta, *, margin=None, label_smoothing=0.0, lengths=None):
  """Length-normalized DPO, TRL's "sigmoid_norm": -log_sigmoid(beta * (log pi/pi0 (a_w) / |a_w| -
  log pi/pi0 (a_l) / |a_l|)) with the token counts `lengths`."""
  check_options("sigmoid_norm", margin=margin is not None, label_smoothing=label_smoothing,
                lengths=lengths is not None)
  _checks.check_positive("beta", beta)
  n_c, n_r = _token_counts(lengths)
  return -jax.nn.log_sigmoid(beta * ((jnp.asarray(pi_c) - ref_c) / n_c - (jnp.asarray(pi_r) - ref_r) / n_r))


def simpo_loss(pi_c, pi_r, ref_c, ref_r, beta, *, margin=None, label_smoothing=0.0, lengths=None,
               gamma: float = 0.5):
  """SimPO (Meng et al. 2024, Eq. 6), reference-free: the label-smoothed logistic loss of
  beta * (pi_c / |a_w| - pi_r / |a_l|) - gamma, the average log-probabilities' margin above the target
  reward margin gamma. TRL's CPOTrainer with loss_type="simpo" and cpo_alpha=0 (its default cpo_alpha
  adds the chosen NLL: weight an "sft" term for that). ref_c, ref_r are not used."""
  check_options("simpo", margin=margin is not None, label_smoothing=label_smoothing, lengths=lengths is not None,
                gamma=gamma)
  _checks.check_positive("beta", beta)
  n_c, n_r = _token_counts(lengths)
  return smoothed_logistic(beta * (jnp.asarray(pi_c) / n_c - jnp.asarray(pi_r) / n_r) - gamma, label_smoothing)


def orpo_loss(pi_c, pi_r, ref_c, ref_r, beta, *, margin=None, label_smoothing=0.0, lengths=None):
  """ORPO (Hong et al. 2024, Eq. 6-7), reference-free, TRL's ORPOTrainer: the chosen responses' NLL per
  token over the batch (sft_loss) plus beta (ORPO's lambda) times -log_sigmoid of the log odds ratio of
  the average log-probabilities p = pi / |a|:  log(p_w / (1 - p_w)) - log(p_l / (1 - p_l)) in the log
  domain. Inputs [n]; ref_c, ref_r are not used."""
  check_options("orpo", margin=margin is not None, label_smoothing=label_smoothing, lengths=lengths is not None)
  _checks.check_positive("beta", beta)
  n_c, n_r = _token_counts(lengths)
  avg_c, avg_r = jnp.asarray(pi_c) / n_c, jnp.asarray(pi_r) / n_r
  log_odds = (avg_c - avg_r) - (_log1mexp(avg_c) - _log1mexp(avg_r))
  return sft_loss(pi_c, pi_r, ref_c, ref_r, beta, lengths=lengths) - beta * jax.nn.log_sigmoid(log_odds)


def smoothed_logistic(z: jax.Array, label_smoothing: float) -> jax.Array:
  """-(1 - ls) * log_sigmoid(z) - ls * log_sigmoid(-z): the logistic loss of a label flipped with
  probability ls."""
  return -(1.0 - label_smoothing) * jax.nn.log_sigmoid(z) - label_smoothing * jax.nn.log_sigmoid(-z)


def _margin(pi_c, margin):
  _checks.check_same_rank("pi_c", pi_c, "margin", margin)
  return 0.0 if margin is None else margin


def _implicit_rewards(pi_c, pi_r, ref_c, ref_r, beta):
  _checks.check_positive("beta", beta)
  _checks.check_same_rank("pi_c", pi_c, "pi_r", pi_r, "ref_c", ref_c, "ref_r", ref_r)
  return beta * (jnp.asarray(pi_c) - ref_c), beta * (jnp.asarray(pi_r) - ref_r)


def _token_counts(lengths):
  chosen, rejected = lengths
  return jnp.maximum(jnp.asarray(chosen), 1), jnp.maximum(jnp.asarray(rejected), 1)


def _log1mexp(x):
  """log(1 - exp(x)) for x < 0, branching at -log 2 for accuracy (Maechler 2012)."""
  return jnp.where(x < -0.6931471805599453, jnp.log1p(-jnp.exp(x)), jnp.log(-jnp.expm1(x)))


class LossSpec(NamedTuple):
  """A registered pairwise loss: its function, the options it honours besides beta (margin,
  label_smoothing and its own keyword options), whether it needs the token counts `lengths`, and whether it
  reads the reference log-probabilities."""
  loss: Callable
  options: frozenset
  needs_lengths: bool = False
  uses_reference: bool = True


# name -> LossSpec; the names are TRL 1.16's DPOTrainer loss_type names, "dpo" (this project's name for
# TRL's "sigmoid") and the reference-free simpo and orpo.
PAIRWISE_LOSSES: dict[str, LossSpec] = {
    "dpo": LossSpec(dpo_loss, frozenset({"margin", "label_smoothing"})),
    "sigmoid": LossSpec(dpo_loss, frozenset({"margin", "label_smoothing"})),
    "hinge": LossSpec(hinge_loss, frozenset({"margin"})),
    "ipo": LossSpec(ipo_loss, frozenset({"per_token"})),
    "exo_pair": LossSpec(exo_pair_loss, frozenset({"label_smoothing"})),
    "nca_pair": LossSpec(nca_pair_loss, frozenset()),
    "robust": LossSpec(robust_loss, frozenset({"label_smoothing"})),
    "bco_pair": LossSpec(bco_pair_loss, frozenset()),
    "sppo_hard": LossSpec(sppo_hard_loss, frozenset()),
    "aot": LossSpec(aot_loss, frozenset({"label_smoothing"})),
    "aot_unpaired": LossSpec(aot_unpaired_loss, frozenset({"label_smoothing"})),
    "apo_zero": LossSpec(apo_zero_loss, frozenset()),
    "apo_down": LossSpec(apo_down_loss, frozenset()),
    "discopop": LossSpec(discopop_loss, frozenset({"tau"})),
    "sft": LossSpec(sft_loss, frozenset(), needs_lengths=True, uses_reference=False),
    "sigmoid_norm": LossSpec(sigmoid_norm_loss, frozenset(), needs_lengths=True),
    "simpo": LossSpec(simpo_loss, frozenset({"label_smoothing", "gamma"}), needs_lengths=True, uses_reference=False),
    "orpo": LossSpec(orpo_loss, frozenset(), needs_lengths=True, uses_reference=False),
}
DEFAULT_OPTIONS = {"per_token": False, "tau": 0.05, "gamma": 0.5}


def check_options(name: str, *, margin: bool = False, label_smoothing: float = 0.0, lengths: bool = True,
                  **options) -> None:
  """ValueError when `name` is not a registered loss, cannot honour a requested option (a margin, i.e.
  pessimistic DPO's uncertainty term; nonzero label smoothing; one of its own options such as tau or
  gamma set away from its default), has an option out of range, or needs token counts and `lengths` is
  False. Callers that do not know yet whether they will pass lengths leave it True."""
  spec = registered(name)
  if margin and "margin" not in spec.options:
    raise ValueError(f"the {name} loss takes no margin (pessimistic DPO's uncertainty term); "
                     f"losses that do: {sorted(k for k, s in PAIRWISE_LOSSES.items() if 'margin' in s.options)}")
  if label_smoothing and "label_smoothing" not in spec.options:
    raise ValueError(f"the {name} loss takes no label_smoothing (got {label_smoothing}); losses that do: "
                     f"{sorted(k for k, s in PAIRWISE_LOSSES.items() if 'label_smoothing' in s.options)}")
  for option, value in options.items():
    if option not in DEFAULT_OPTIONS:
      raise ValueError(f"unknown loss option {option!r}; options: {sorted(DEFAULT_OPTIONS)}")
    if value != DEFAULT_OPTIONS[option] and option not in spec.options:
      raise ValueError(f"the {name} loss takes no {option} (got {value})")
  _checks.check_in_range("label_smoothing", label_smoothing, 0.0, 0.5)
  if name == "robust" and label_smoothing >= 0.5:
    raise ValueError(f"the robust loss needs label_smoothing < 0.5 (it divides by 1 - 2 eps), got {label_smoothing}")
  if name == "exo_pair" and not label_smoothing > 0:
    raise ValueError("the exo_pair loss needs label_smoothing > 0 (EXO's eps, e.g. 1e-3): its target puts "
                     "log eps on the rejected response")
  if "tau" in options:
    _checks.check_positive("tau", options["tau"])
  needs = spec.needs_lengths or (name == "ipo" and options.get("per_token"))
  if needs and not lengths:
    raise ValueError(f"the {name} loss averages over tokens: pass lengths=(chosen_tokens, rejected_tokens)")


def registered(name: str) -> LossSpec:
  """The LossSpec of `name` (ValueError listing the registered names otherwise)."""
  if name not in PAIRWISE_LOSSES:
    raise ValueError(f"unknown pairwise loss {name!r}; registered: {sorted(PAIRWISE_LOSSES)}")
  return PAIRWISE_LOSSES[name]


def pairwise_loss(name: str) -> Callable:
  """The registered pairwise loss called `name` (ValueError listing the registered names otherwise)."""
  return registered(name).loss


def combined_loss(names, weights=None) -> Callable:
  """TRL's multi-loss training (`loss_type` list with `loss_weights`): a function with the pairwise
  signature whose batch mean is sum_k weights[k] * mean(loss_k) (weights default to 1), e.g. DPO + SFT
  (RPO, Pang et al. 2024). A margin, label smoothing and the losses' own options reach only the members
  that honour them (check_combined tells before any work whether every requested one is honoured)."""
  weights = _weights(names, weights)
  specs = [registered(name) for name in names]

  def loss(pi_c, pi_r, ref_c, ref_r, beta, *, margin=None, label_smoothing=0.0, lengths=None, **options):
    total = 0.0
    for spec, weight in zip(specs, weights):
      own = _member_options(spec, margin, label_smoothing, options)
      total = total + weight * spec.loss(pi_c, pi_r, ref_c, ref_r, beta, lengths=lengths, **own)
    return total

  return loss


def _weights(names, weights):
  """The loss weights of `names` (1 each by default); ValueError when their numbers differ."""
  weights = [1.0] * len(names) if weights is None else list(weights)
  if not names or len(weights) != len(names):
    raise ValueError(f"loss weights: {len(weights)} weights for {len(names)} losses {list(names)}")
  return weights


def _member_options(spec, margin, label_smoothing, options):
  """The keyword options one member of a combined loss receives: a margin and label smoothing only if it
  honours them, and those of its own options it honours (unknown ones pass through, to be refused)."""
  own = {k: v for k, v in options.items() if k in spec.options or k not in DEFAULT_OPTIONS}
  return {**own, "margin": margin if "margin" in spec.options else None,
          "label_smoothing": label_smoothing if "label_smoothing" in spec.options else 0.0}


def check_combined(names, weights=None, *, margin: bool = False, label_smoothing: float = 0.0, lengths: bool = True,
                   **options) -> None:
  """check_options for combined_loss(names, weights): each member with the options it honours, and a
  ValueError for a requested option (a margin, label smoothing, or an own option away from its default)
  that no member honours, or a wrong number of weights."""
  _weights(names, weights)
  requested = {"margin": margin, "label_smoothing": label_smoothing,
               **{k: v for k, v in options.items() if v != DEFAULT_OPTIONS.get(k, v)}}
  for name in names:
    check_options(name, lengths=lengths, **_member_options(registered(name), margin, label_smoothing, options))
  for option, value in requested.items():
    if value and not any(option in registered(n).options for n in names):
      if len(names) == 1:
        check_options(names[0], **{option: value})  # raises, naming the losses that honour it
      raise ValueError(f"none of the losses {list(names)} takes {option} (got {value})")


def reward_loss(r_c: ArrayLike, r_r: ArrayLike) -> jax.Array:
  """Bradley-Terry negative log-likelihood of Eq. (3) for one labelled pair: -log_sigmoid(r_c - r_r)."""
  _checks.check_same_rank("r_c", r_c, "r_r", r_r)
  return -jax.nn.log_sigmoid(jnp.asarray(r_c) - r_r)
