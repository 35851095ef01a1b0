"""llm.preference.oracle (callable, reward-model checkpoint incl. transformers' *ForSequenceClassification, labelled
dataset; BT and argmax labels) and llm.preference.evaluate (KL estimate against an exact enumeration, win rates),
and the sample / label commands."""

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tiny
from flax import nnx

from llm import cli
from llm.inference import sampling
from llm.inference import tokenizer as tok
from llm.models import hf_io
from llm.preference import evaluate, oracle
from llm.training import config as C


def test_bradley_terry_and_argmax_labels():
  judge = oracle.RewardOracle(lambda prompts, responses: [float(len(r)) for r in responses])
  p = judge.preference_probs(["x"] * 3, ["aaa", "a", "aa"], ["a", "aaa", "aa"])
  np.testing.assert_allclose(p, [1 / (1 + math.exp(-2)), 1 / (1 + math.exp(2)), 0.5])
  n = 20000
  labels = oracle.label_pairs(judge, ["x"] * n, ["aa"] * n, ["a"] * n, mode="bt", rng=np.random.default_rng(0))
  expected = 1 / (1 + math.exp(-1))
  assert abs(labels.mean() - expected) < 4 * math.sqrt(expected * (1 - expected) / n)
  argmax = oracle.label_pairs(judge, ["x"] * 4, ["aa", "a", "b", "c"], ["a", "aa", "c", "b"], mode="argmax",
                              rng=np.random.default_rng(0))
  assert argmax[:2].tolist() == [True, False]
  ties = oracle.label_pairs(judge, ["x"] * n, ["a"] * n, ["b"] * n, mode="argmax", rng=np.random.default_rng(1))
  assert abs(ties.mean() - 0.5) < 4 * 0.5 / math.sqrt(n)
  with pytest.raises(ValueError, match="returned shape"):
    oracle.RewardOracle(lambda p, r: [1.0]).rewards(["x", "y"], ["a", "b"])


def test_dataset_and_callable_oracles(tmp_path):
  path = tiny.write_jsonl(tmp_path / "labels.jsonl", [{"prompt": "x", "chosen": "good", "rejected": "bad"}])
  judge = oracle.dataset_oracle(path)
  assert judge.preference_probs(["x", "x"], ["good", "bad"], ["bad", "good"]).tolist() == [1.0, 0.0]
  with pytest.raises(ValueError, match="has no label for the pair"):
    judge.preference_probs(["x"], ["good"], ["fine"])
  with pytest.raises(ValueError, match="has no rewards"):
    judge.rewards(["x"], ["good"])
  gold = oracle.callable_oracle("tiny:gold_reward")
  assert gold.rewards(["x", "x"], [" it is good.", " bad and sad"]).tolist() == [1.0, -2.0]
  for spec, message in (("tiny", "must be 'module:function'"), ("tiny:nothing", "cannot import"),
                        ("no_such_module:f", "cannot import")):
    with pytest.raises(ValueError, match=message):
      oracle.callable_oracle(spec)


@pytest.mark.parametrize("pad", ["pad", "eos"])
def test_reward_model_oracle_reads_transformers_sequence_classification(assets, tmp_path, pad):
  """transformers scores the last token that is not the pad id: with pad == eos (Llama, GPT-2 and TRL reward
  models) the token before the EOS the oracle appends, otherwise the EOS itself."""
  torch = pytest.importorskip("torch")
  import transformers
  tokenizer = tok.load_tokenizer(assets["policy"])
  assert tokenizer.pad_token_id != tokenizer.eos_token_id
  config = transformers.LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
                                    num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                    pad_token_id=getattr(tokenizer, f"{pad}_token_id"), num_labels=1)
  torch.manual_seed(0)
  hf = transformers.LlamaForSequenceClassification(config).eval()
  folder = str(tmp_path / "rm")
  hf.save_pretrained(folder)
  tokenizer.save_pretrained(folder)
  prompts = ["Review the film:", "Review the park:", "Review the food:"]
  responses = [" the film is good.", " bad", " the food is lovely and bright."]
  ours = oracle.reward_model_oracle(folder, batch_size=2).rewards(prompts, responses)
  for prompt, response, reward in zip(prompts, responses, ours):
    ids = tokenizer.encode(prompt, add_special_tokens=False) + tokenizer.encode(response, add_special_tokens=False)
    with torch.no_grad():
      expected = hf(torch.tensor([ids + [tokenizer.eos_token_id]])).logits[0, 0].item()
    np.testing.assert_allclose(reward, expected, rtol=1e-4, atol=1e-5)


def perturbed(model, scale, seed):
  params = nnx.state(model, nnx.Param)
  leaves, treedef = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.key(seed), len(leaves))
  noisy = [x + scale * jax.random.normal(k, x.shape, x.dtype) for x, k in zip(leaves, keys)]
  nnx.update(model, jax.tree.unflatten(treedef, noisy))
  return model


def test_kl_estimate_matches_exact_enumeration(assets):
  """KL(pi || pi0) over 2-token responses to one prompt, summed exactly over the vocabulary, against the
  sample estimate from 2000 responses (within 4 standard errors)."""
  policy = perturbed(hf_io.load_hf_checkpoint(assets["policy"])[0], 0.3, 1)
  reference = hf_io.load_hf_checkpoint(assets["policy"])[0]
  tokenizer = tok.load_tokenizer(assets["policy"])
  prompt = tokenizer.encode("Review the song:", add_special_tokens=False)
  eos, vocab = tokenizer.eos_token_id, len(tokenizer)

  def step_logprobs(model, rows):
    logits = model(jnp.asarray(rows, jnp.int32))[:, -1].astype(jnp.float64)
    return np.asarray(jax.nn.log_softmax(logits))

  p1, q1 = step_logprobs(policy, [prompt])[0], step_logprobs(reference, [prompt])[0]
  rows = [prompt + [t] for t in range(vocab)]
  p2, q2 = step_logprobs(policy, rows), step_logprobs(reference, rows)
  second = (np.exp(p2) * (p2 - q2)).sum(-1)
  exact = float((np.exp(p1) * (p1 - q1 + np.where(np.arange(vocab) == eos, 0.0, second))).sum())
  samples = sampling.sample_texts(policy, tokenizer, ["Review the song:"], jax.random.key(0), num_samples=2000,
                                  max_new_tokens=2, batch_size=1)
  kl, se, ratios = evaluate.kl_estimate(policy, reference, samples, batch_size=1000)
  assert exact > 0.05 and se < 0.2 * exact
  assert abs(kl - exact) < 4 * se, (kl, se, exact)
  ended = samples["response_ids"][:, 0] == eos  # a first-token stop ends the response
  assert np.all(samples["response_mask"][ended, 1] == 0) and np.all(samples["lengths"][ended] == 0)


def test_head_to_head_counts_table_4_score():
  result = evaluate.head_to_head([1.0, 0.0, 2.0, 1.0], [0.0, 0.0, 3.0, 0.95], tie_tolerance=0.1)
  assert (result["win"], result["lose"], result["tie"]) == (0.25, 0.25, 0.5)
  assert result["score"] == 0.5 and result["score_se"] == pytest.approx(np.std([1, 0.5, 0, 0.5], ddof=1) / 2)
  better = evaluate.head_to_head([2.0, 2.0, 0.0], [1.0, 1.0, 1.0])  # the policy wins twice: not symmetric
  assert (better["win"], better["lose"], better["tie"], better["score"]) == (2 / 3, 1 / 3, 0.0, 2 / 3)


@pytest.mark.parametrize("temperature,top_k,top_p", [(0.05, 0, 0.6), (0.1, 4, 1.0)])
def test_the_sample_command_draws_from_the_exact_truncated_tempered_distribution(assets, tmp_path, temperature,
                                                                                 top_k, top_p):
  """One prompt, 1500 one-token responses from `sample`, against transformers' next-token logits passed
  through temperature, top-k and top-p by hand: a chi-square test on the kept tokens, none outside them."""
  import torch
  import transformers
  from scipy import stats
  from test_models import numpy_filter

  prompt = "the food"
  prompts = tiny.write_jsonl(str(tmp_path / "one.jsonl"), [{"prompt": prompt}])
  overrides = tiny.overrides(assets, tmp_path, **{"sample.prompts": prompts, "sample.num_samples": 1500,
                                                  "sample.max_new_tokens": 1, "sample.temperature": temperature,
                                                  "sample.top_k": top_k, "sample.top_p": top_p,
                                                  "sample.batch_size": 1})
  summary = cli.run_sample(C.load_config("sample", None, overrides))
  (row,) = [json.loads(line) for line in open(summary["output"])]
  tokenizer = tok.load_tokenizer(assets["policy"])
  model = transformers.AutoModelForCausalLM.from_pretrained(assets["policy"], dtype=torch.float32)
  with torch.no_grad():
    logits = model(torch.tensor([tok.prompt_ids(tokenizer, prompt)])).logits[0, -1].double().numpy()
  target = np.exp(numpy_filter(logits, temperature, top_k, top_p))
  target /= target.sum()
  assert 1 < np.count_nonzero(target) <= 12  # a real truncation that keeps several tokens
  texts = [tokenizer.decode([i], skip_special_tokens=True) for i in range(len(target))]
  expected = {}
  for text, p in zip(texts, target):
    expected[text] = expected.get(text, 0.0) + p
  counts = {text: 0 for text in expected}
  for response in row["responses"]:
    counts[response] += 1
  kept = [text for text, p in expected.items() if p > 0]
  assert sum(counts[text] for text in expected if expected[text] == 0) == 0
  observed = np.array([counts[t] for t in kept])
  assert stats.chisquare(observed, 1500 * np.array([expected[t] for t in kept])).pvalue > 1e-3


def test_sample_then_label_commands(assets, tmp_path):
  overrides = tiny.overrides(assets, tmp_path, **{"sample.prompts": assets["prompts"], "sample.num_samples": 3,
                                                  "sample.max_new_tokens": 5, "sample.batch_size": 4})
  summary = cli.run_sample(C.load_config("sample", None, overrides))
  rows = [json.loads(line) for line in open(summary["output"])]
  assert len(rows) == 16 and all(len(r["responses"]) == 3 for r in rows)
  assert all(r["stopped"] == [False] * 3 for r in rows)  # an untrained model never stops within 5 tokens
  label = tiny.overrides(assets, tmp_path, **{"label.input": summary["output"], "oracle.kind": "callable",
                                              "oracle.function": "tiny:gold_reward", "oracle.labels": "argmax"})
  result = cli.run_label(C.load_config("label", None, label))
  assert (result["pairs"], result["truncated"]) == (0, 16)  # cut responses are never labelled
  finished = tiny.write_jsonl(str(tmp_path / "finished.jsonl"), [{**r, "stopped": [True] * 3} for r in rows])
  result = cli.run_label(C.load_config("label", None, [*label, f"label.input={finished}"]))
  pairs = [json.loads(line) for line in open(result["output"])]
  assert result["pairs"] == len(pairs) == 16  # pairs (0, 1) of 3 responses each
  gold = lambda text: tiny.gold_reward([""], [text])[0]
  assert all(gold(p["chosen"]) >= gold(p["rejected"]) for p in pairs)
  assert all({p["chosen"], p["rejected"]} == set(r["responses"][:2]) for p, r in zip(pairs, rows))
