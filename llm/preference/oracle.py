"""Preference oracles: who labels pairs of responses, and the gold reward that evaluation reports.

An oracle has `preference_probs(prompts, a, b) -> P(a > b)` [N]; reward oracles also have
`rewards(prompts, responses) -> r` [N]. Three kinds:
  - RewardOracle(reward_fn): any gold reward; a Python callable on text (`callable_oracle("mod:fn")`, the
    built-in task's scorer) or a reward-model checkpoint (`reward_model_oracle(folder)`: our scalar-head
    model or an HF `*ForSequenceClassification` folder). P(a > b) = sigmoid(r(a) - r(b)), Eq. (1).
  - DatasetOracle: a fixed labelled JSONL {prompt, chosen, rejected}; P is 1 or 0 for pairs it holds.
`label_pairs` turns P into labels: Bradley-Terry samples ("bt") or the more likely response ("argmax").
"""

import dataclasses
import importlib
from typing import Callable

import numpy as np

from llm.inference import logprobs
from llm.inference import tokenizer as tok
from llm.parallel import distributed
from llm.training import data


@dataclasses.dataclass
class RewardOracle:
  reward_fn: Callable  # (prompts: list[str], responses: list[str]) -> [N] rewards

  def rewards(self, prompts, responses):
    r = np.asarray(self.reward_fn(list(prompts), list(responses)), np.float64)
    if r.shape != (len(prompts),):
      raise ValueError(f"reward function returned shape {r.shape} for {len(prompts)} responses")
    return r

  def preference_probs(self, prompts, a, b):
    """P(a > b | x) = sigmoid(r(x, a) - r(x, b)), the Bradley-Terry model of Eq. (1)."""
    rewards = self.rewards(list(prompts) * 2, list(a) + list(b))
    return 1.0 / (1.0 + np.exp(-(rewards[:len(a)] - rewards[len(a):])))


@dataclasses.dataclass
class DatasetOracle:
  preferred: dict  # {(prompt, chosen, rejected): 1.0} for every labelled pair
  source: str

  def rewards(self, prompts, responses):
    raise ValueError(f"oracle {self.source} is a labelled dataset: it has no rewards (evaluation needs "
                     "oracle.kind = reward_model or callable)")

  def preference_probs(self, prompts, a, b):
    out = []
    for x, ya, yb in zip(prompts, a, b):
      if (x, ya, yb) in self.preferred:
        out.append(1.0)
      elif (x, yb, ya) in self.preferred:
        out.append(0.0)
      else:
        raise ValueError(f"oracle {self.source} has no label for the pair ({x[:40]!r}: {ya[:40]!r} vs {yb[:40]!r})")
    return np.asarray(out)


def label_pairs(oracle, prompts, a, b, *, mode, rng):
  """[N] bool: True where a is preferred. mode "bt": a Bernoulli(P(a > b)) draw; "argmax": P > 1/2, ties
  by a fair coin. rng: a numpy Generator."""
  p = oracle.preference_probs(prompts, a, b)
  if mode == "bt":
    return rng.random(len(p)) < p
  if mode == "argmax":
    return np.where(p == 0.5, rng.random(len(p)) < 0.5, p > 0.5)
  raise ValueError(f"label mode must be 'bt' or 'argmax', got {mode!r}")


def callable_oracle(spec):
  """RewardOracle of the function named "module:function" (importable; takes (prompts, responses))."""
  module, sep, name = spec.partition(":")
  if not sep:
    raise ValueError(f"oracle.function must be 'module:function', got {spec!r}")
  try:
    fn = getattr(importlib.import_module(module), name)
  except (ImportError, AttributeError) as e:
    raise ValueError(f"oracle.function {spec!r}: cannot import ({e})") from None
  return RewardOracle(fn)


def dataset_oracle(path, *, skip_malformed=False):
  examples, _ = data.load_examples(path, "preferences", skip_malformed=skip_malformed)
  return DatasetOracle({example: 1.0 for example in examples}, path)


def reward_model_oracle(path, *, batch_size=32, max_length=1024, dtype="float32"):
  """RewardOracle of a scalar-head checkpoint folder (with its tokenizer)."""
  from llm.models.hf_io import load_hf_checkpoint
  model, config = load_hf_checkpoint(path, dtype=dtype)
  if config.num_labels != 1:
    raise ValueError(f"{path}: a reward model needs a single-score *ForSequenceClassification head, "
                     f"got num_labels={config.num_labels}")
  tokenizer = tok.load_tokenizer(path)
  return RewardOracle(text_scorer(model, tokenizer, batch_size=batch_size, max_length=max_length))


def text_scorer(model, tokenizer, *, batch_size=32, max_length=1024):
  """(prompts, responses) -> [N] rewards of a scalar-head model (lengths padded to multiples of 32 so
  few shapes are compiled)."""
  def reward_fn(prompts, responses):
    arrays = data.tokenize_sft(tokenizer, list(zip(prompts, responses)), max_length, max_length)
    arrays = pad_lengths(arrays, multiple=32, pad_id=tokenizer.pad_token_id)
    return distributed.map_batches(lambda batch: logprobs.batch_rewards(model, batch), arrays, batch_size)

  return reward_fn


def pad_lengths(arrays, *, multiple, pad_id):
  """Prompts padded on the left and responses on the right to a multiple of `multiple` tokens."""
  out = {}
  for name, value in arrays.items():
    pad = data.pad_left if name.startswith("prompt") else data.pad_right
    out[name] = pad(value, value.shape[1] + -value.shape[1] % multiple, pad_id if name.endswith("_ids") else 0)
  return out


def make_oracle(section):
  """The oracle of an llm.training.config.OracleSection."""
  from llm.training.config import require_file
  if section.kind == "callable":
    return callable_oracle(section.function)
  if section.kind == "dataset":
    return dataset_oracle(require_file("oracle.path", section.path))
  return reward_model_oracle(require_file("oracle.path", section.path, folder=True), batch_size=section.batch_size)
