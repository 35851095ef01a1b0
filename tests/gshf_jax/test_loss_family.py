"""TRL's DPO loss family, SimPO and ORPO: every registered loss against a float64 NumPy transcription of
its paper's formula on hand-made inputs (default suite), and against TRL's own code on the same
log-probabilities (DPOTrainer._compute_loss, CPOTrainer.cpo_loss, ORPOTrainer.odds_ratio_loss; run when
TRL 1.16, in the test extra, is installed)."""

import types
from collections import defaultdict

import numpy as np
import pytest

from gshf_jax import PAIRWISE_LOSSES, check_options, combined_loss, pairwise_loss

RNG = np.random.default_rng(0)
N = 6
PI_C, PI_R = -RNG.uniform(2, 12, N), -RNG.uniform(2, 12, N)
REF_C, REF_R = PI_C + RNG.normal(0, 1.5, N), PI_R + RNG.normal(0, 1.5, N)
LEN_C, LEN_R = RNG.integers(2, 9, N).astype(float), RNG.integers(2, 9, N).astype(float)
BETA = 0.3


def log_sigmoid(z):
  return -np.logaddexp(0.0, -z)


def sigmoid(z):
  return 1 / (1 + np.exp(-z))


def transcription(name, ls=0.0, tau=0.05, gamma=0.5, per_token=False):
  """The papers' formulas, written out on NumPy arrays (batch mean of the per-example losses)."""
  cr, rr = PI_C - REF_C, PI_R - REF_R
  z = BETA * (cr - rr)
  smoothed = lambda v: np.mean(-(1 - ls) * log_sigmoid(v) - ls * log_sigmoid(-v))
  if name in ("dpo", "sigmoid"):
    return smoothed(z)
  if name == "hinge":
    return np.mean(np.maximum(0, 1 - z))
  if name == "ipo":
    h = cr / LEN_C - rr / LEN_R if per_token else cr - rr
    return np.mean((h - 1 / (2 * BETA)) ** 2)
  if name == "exo_pair":  # KL(q || p), q = (sigmoid(z), sigmoid(-z)), p = (1 - eps, eps)
    q = np.stack([sigmoid(z), sigmoid(-z)])
    p = np.array([1 - ls, ls])[:, None]
    return np.mean(np.sum(q * np.log(q / p), 0))
  if name == "nca_pair":
    return np.mean(-log_sigmoid(BETA * cr) - 0.5 * log_sigmoid(-BETA * cr) - 0.5 * log_sigmoid(-BETA * rr))
  if name == "robust":
    return np.mean(((1 - ls) * -log_sigmoid(z) - ls * -log_sigmoid(-z)) / (1 - 2 * ls))
  if name == "bco_pair":
    return np.mean(-log_sigmoid(BETA * cr) - log_sigmoid(-BETA * rr))
  if name == "sppo_hard":
    return np.mean((cr - 1 / (2 * BETA)) ** 2 + (rr + 1 / (2 * BETA)) ** 2)
  if name == "aot":
    return smoothed(BETA * (np.sort(PI_C - PI_R) - np.sort(REF_C - REF_R)))
  if name == "aot_unpaired":
    return smoothed(BETA * (np.sort(cr) - np.sort(rr)))
  if name == "apo_zero":
    return np.mean(1 - sigmoid(BETA * cr) + sigmoid(BETA * rr))
  if name == "apo_down":
    return np.mean(sigmoid(BETA * cr) + 1 - sigmoid(BETA * (cr - rr)))
  if name == "discopop":
    w = sigmoid(z / tau)
    return np.mean((1 - w) * -log_sigmoid(z) + w * np.exp(-z))
  if name == "sft":
    return -PI_C.sum() / LEN_C.sum()
  if name == "sigmoid_norm":
    return np.mean(-log_sigmoid(BETA * (cr / LEN_C - rr / LEN_R)))
  if name == "simpo":
    return smoothed(BETA * (PI_C / LEN_C - PI_R / LEN_R) - gamma)
  if name == "orpo":
    p_c, p_r = np.exp(PI_C / LEN_C), np.exp(PI_R / LEN_R)
    odds = np.log(p_c / (1 - p_c)) - np.log(p_r / (1 - p_r))
    return -PI_C.sum() / LEN_C.sum() - BETA * np.mean(log_sigmoid(odds))
  raise KeyError(name)


CASES = [(name, {}) for name in PAIRWISE_LOSSES if name != "exo_pair"] + [
    ("exo_pair", {"label_smoothing": 1e-3}), ("exo_pair", {"label_smoothing": 0.2}),
    ("dpo", {"label_smoothing": 0.2}), ("robust", {"label_smoothing": 0.2}), ("aot", {"label_smoothing": 0.1}),
    ("aot_unpaired", {"label_smoothing": 0.1}), ("simpo", {"label_smoothing": 0.1, "gamma": 1.2}),
    ("ipo", {"per_token": True}), ("discopop", {"tau": 0.5})]


def ours(name, **options):
  return float(np.mean(pairwise_loss(name)(PI_C, PI_R, REF_C, REF_R, BETA, lengths=(LEN_C, LEN_R), **options)))


@pytest.mark.parametrize("name,options", CASES, ids=[f"{n}-{o}" for n, o in CASES])
def test_each_loss_equals_its_formula(name, options):
  ls = options.get("label_smoothing", 0.0)
  expected = transcription(name, ls=ls, **{k: v for k, v in options.items() if k != "label_smoothing"})
  assert ours(name, **options) == pytest.approx(expected, rel=1e-12)


def test_every_loss_is_registered_with_its_options_and_a_perturbation_moves_it():
  assert set(PAIRWISE_LOSSES) == {"dpo", "sigmoid", "hinge", "ipo", "exo_pair", "nca_pair", "robust", "bco_pair",
                                  "sppo_hard", "aot", "aot_unpaired", "apo_zero", "apo_down", "discopop", "sft",
                                  "sigmoid_norm", "simpo", "orpo"}
  reference_free = {n for n, s in PAIRWISE_LOSSES.items() if not s.uses_reference}
  assert reference_free == {"sft", "simpo", "orpo"}
  for name, spec in PAIRWISE_LOSSES.items():
    kw = {"label_smoothing": 0.1} if name == "exo_pair" else {}
    base = spec.loss(PI_C, PI_R, REF_C, REF_R, BETA, lengths=(LEN_C, LEN_R), **kw)
    moved = spec.loss(PI_C + 0.5, PI_R, REF_C, REF_R, BETA, lengths=(LEN_C, LEN_R), **kw)
    assert not np.allclose(base, moved), name  # the chosen log-probability reaches every loss
    ref_moved = spec.loss(PI_C, PI_R, REF_C + 0.5, REF_R, BETA, lengths=(LEN_C, LEN_R), **kw)
    assert np.allclose(base, ref_moved) == (name in reference_free), name


@pytest.mark.parametrize("name,options,message", [
    ("exo_pair", {}, "the exo_pair loss needs label_smoothing > 0"),
    ("robust", {"label_smoothing": 0.5}, "the robust loss needs label_smoothing < 0.5"),
    ("sft", {"lengths": False}, "the sft loss averages over tokens"),
    ("ipo", {"per_token": True, "lengths": False}, "the ipo loss averages over tokens"),
    ("nca_pair", {"margin": True}, "the nca_pair loss takes no margin"),
    ("discopop", {"gamma": 1.0}, "the discopop loss takes no gamma"),
    ("simpo", {"tau": 0.1}, "the simpo loss takes no tau"),
    ("dpo", {"temperature": 1.0}, "unknown loss option 'temperature'"),
])
def test_options_a_loss_cannot_honour_are_refused(name, options, message):
  with pytest.raises(ValueError, match=message):
    check_options(name, **options)


def test_combined_loss_is_the_weighted_sum_of_batch_means():
  """TRL's loss_type=[...] with loss_weights: RPO is DPO + alpha * SFT."""
  loss = combined_loss(["dpo", "sft"], [1.0, 0.7])
  got = float(np.mean(loss(PI_C, PI_R, REF_C, REF_R, BETA, lengths=(LEN_C, LEN_R))))
  assert got == pytest.approx(transcription("dpo") + 0.7 * transcription("sft"), rel=1e-12)
  with pytest.raises(ValueError, match="2 weights for 1 losses"):
    combined_loss(["dpo"], [1.0, 2.0])
  # a margin reaches only the members that honour it
  margin = np.full(N, 0.4)
  with_margin = float(np.mean(loss(PI_C, PI_R, REF_C, REF_R, BETA, lengths=(LEN_C, LEN_R), margin=margin)))
  plain_dpo_with_margin = float(np.mean(pairwise_loss("dpo")(PI_C, PI_R, REF_C, REF_R, BETA, margin=margin)))
  assert with_margin == pytest.approx(plain_dpo_with_margin + 0.7 * transcription("sft"), rel=1e-12)


# ---------------------------------------------------------------- TRL's own code on the same log-probs

TRL_DPO = [n for n in PAIRWISE_LOSSES if n not in ("dpo", "simpo", "orpo")]


def trl_dpo_loss(loss_types, weights, label_smoothing=0.0, tau=0.05):
  """TRL's DPOTrainer._compute_loss on a batch whose per-token log-probs sum to PI_C, PI_R over the
  completion tokens (LEN_C, LEN_R of them), with the reference log-probs precomputed (REF_C, REF_R).
  Returns (loss, metrics)."""
  torch = pytest.importorskip("torch")
  trl_dpo = pytest.importorskip("trl.trainer.dpo_trainer")
  width = int(max(LEN_C.max(), LEN_R.max())) + 3
  lengths = np.concatenate([LEN_C, LEN_R]).astype(int)
  totals = np.concatenate([PI_C, PI_R])
  completion = np.zeros((2 * N, width), int)
  per_token = np.zeros((2 * N, width - 1))
  for i, (n, total) in enumerate(zip(lengths, totals)):
    completion[i, 2:2 + n] = 1  # 2 prompt tokens, then the completion
    per_token[i, 1:1 + n] = total / n  # log-prob of token j + 1 given the tokens up to j
  outputs = types.SimpleNamespace(log_probs=torch.tensor(per_token), entropy=torch.zeros(2 * N, width - 1),
                                  mean_logits=torch.zeros(2 * N, width - 1),
                                  is_top1=torch.zeros(2 * N, width - 1, dtype=torch.bool))
  accelerator = types.SimpleNamespace(device="cpu", gather=lambda x: x, gather_for_metrics=lambda x: x)
  trainer = types.SimpleNamespace(
      model=types.SimpleNamespace(training=True), accelerator=accelerator, aux_loss_enabled=False, ld_alpha=None,
      precompute_ref_logps=True, f_divergence_type="reverse_kl", loss_types=loss_types, loss_weights=weights,
      beta=BETA, label_smoothing=label_smoothing, args=types.SimpleNamespace(discopop_tau=tau), use_weighting=False,
      _metrics=defaultdict(lambda: defaultdict(list)), _total_train_tokens=0, _tp_size=1)
  inputs = {"input_ids": torch.zeros(2 * N, width, dtype=torch.long), "attention_mask": torch.ones(2 * N, width),
            "completion_mask": torch.tensor(completion), "ref_chosen_logps": torch.tensor(REF_C),
            "ref_rejected_logps": torch.tensor(REF_R)}
  loss = trl_dpo.DPOTrainer._compute_loss(trainer, lambda **kwargs: outputs, inputs, False)
  return float(loss), {k: v[0] for k, v in trainer._metrics["train"].items()}


@pytest.mark.parametrize("name", TRL_DPO)
def test_each_trl_loss_type_equals_trls_dpo_trainer(name):
  ls = 0.1 if name in ("exo_pair", "robust", "aot", "aot_unpaired") else 0.0
  options = {"label_smoothing": ls} if ls else {}
  if name == "ipo":
    options["per_token"] = True  # TRL's IPO averages over tokens
  expected, metrics = trl_dpo_loss([name], [1.0], label_smoothing=ls)
  rel = 1e-7 if name == "exo_pair" else 1e-9  # TRL holds EXO's eps as a float32 tensor
  assert ours(name, **options) == pytest.approx(expected, rel=rel)
  assert metrics["rewards/chosen"] == pytest.approx(np.mean(BETA * (PI_C - REF_C)), rel=1e-9)
  assert metrics["logps/chosen"] == pytest.approx(np.mean(PI_C), rel=1e-9)


def test_loss_weights_equal_trls():
  expected, _ = trl_dpo_loss(["sigmoid", "sft", "bco_pair"], [0.8, 0.5, 0.3])
  got = combined_loss(["sigmoid", "sft", "bco_pair"], [0.8, 0.5, 0.3])(PI_C, PI_R, REF_C, REF_R, BETA,
                                                                      lengths=(LEN_C, LEN_R))
  assert float(np.mean(got)) == pytest.approx(expected, rel=1e-9)


def test_simpo_equals_trls_cpo_trainer_and_orpo_its_orpo_trainer():
  torch = pytest.importorskip("torch")
  cpo = pytest.importorskip("trl.experimental.cpo.cpo_trainer")
  orpo = pytest.importorskip("trl.experimental.orpo.orpo_trainer")
  accelerator = types.SimpleNamespace(device="cpu")
  avg_c, avg_r = torch.tensor(PI_C / LEN_C), torch.tensor(PI_R / LEN_R)  # TRL averages over tokens here
  simpo = types.SimpleNamespace(alpha=0.0, beta=BETA, simpo_gamma=1.2, label_smoothing=0.1, loss_type="simpo",
                                accelerator=accelerator)
  losses = cpo.CPOTrainer.cpo_loss(simpo, avg_c, avg_r)[0]
  assert ours("simpo", label_smoothing=0.1, gamma=1.2) == pytest.approx(float(losses.mean()), rel=1e-9)
  ratio = orpo.ORPOTrainer.odds_ratio_loss(types.SimpleNamespace(beta=BETA, accelerator=accelerator), avg_c, avg_r)[0]
  nll = -PI_C.sum() / LEN_C.sum()  # TRL's cross-entropy over the chosen completion tokens of the batch
  assert ours("orpo") == pytest.approx(nll - float(ratio.mean()), rel=1e-7)  # TRL computes the odds in float32
