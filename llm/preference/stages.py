"""The three stages that the CLI commands (`sample`, `label`, `evaluate`), the pipelines and the built-in
run all go through, so each is written once: sampling responses of a policy folder to JSONL, labelling
response pairs with the preference oracle to JSONL, and evaluating a policy folder.
"""

import numpy as np

from llm.inference import sampling
from llm.inference import tokenizer as tok
from llm.preference import evaluate, oracle
from llm.training import data, trainers
from llm.training.config import require_file


def sample_to_file(model_section, policy, prompts, path, key, *, num_samples, max_new_tokens, temperature,
                   batch_size, max_prompt_length, top_k=0, top_p=1.0):
  """num_samples responses per prompt from the policy folder `policy` (loaded with model_section's
  settings), written to `path` as {"prompt", "responses", "stopped"} lines (process 0; "stopped": whether
  each response ended with a stop token rather than at max_new_tokens); returns the rows."""
  model, tokenizer = trainers.load_model(model_section, None, path=policy)
  out = sampling.sample_texts(model, tokenizer, prompts, key, num_samples=num_samples, max_new_tokens=max_new_tokens,
                              temperature=temperature, top_k=top_k, top_p=top_p, batch_size=batch_size,
                              max_prompt_length=max_prompt_length)
  n = num_samples
  rows = [{"prompt": tok.as_json(x), "responses": out["responses"][i * n:(i + 1) * n],
           "stopped": [bool(v) for v in out["stopped"][i * n:(i + 1) * n]]} for i, x in enumerate(prompts)]
  data.write_jsonl(path, rows)
  return rows


def responses(row):
  """[(text, stopped)] of a sample row (rows without "stopped" hold finished responses)."""
  return list(zip(row["responses"], row.get("stopped", [True] * len(row["responses"]))))


def trainable_pairs(prompts, a, b):
  """The pairs of (text, stopped) responses a[i], b[i] that a trainer would use: both responses stopped (a
  response cut at max_new_tokens would be trained to end there and scored as a finished answer) and they
  differ (the trainers drop identical pairs, Appendix H). Returns (prompts, a texts, b texts,
  {"truncated": n, "identical": n} pairs dropped)."""
  kept, dropped = [], {"truncated": 0, "identical": 0}
  for x, (ya, done_a), (yb, done_b) in zip(prompts, a, b):
    if not (done_a and done_b):
      dropped["truncated"] += 1
    elif data.same_completion(ya, yb):
      dropped["identical"] += 1
    else:
      kept.append((x, ya, yb))
  return [k[0] for k in kept], [k[1] for k in kept], [k[2] for k in kept], dropped


def label_to_file(oracle_section, prompts, a, b, path, *, seed):
  """Pairs (a[i], b[i]) labelled by the oracle of oracle_section (oracle.labels: Bradley-Terry samples with
  numpy seed `seed`, or argmax), written to `path` as {"prompt", "chosen", "rejected"} lines; returns them."""
  judge = oracle.make_oracle(oracle_section)
  a_wins = oracle.label_pairs(judge, prompts, a, b, mode=oracle_section.labels, rng=np.random.default_rng(seed))
  rows = [data.preference_row(x, ya if w else yb, yb if w else ya) for x, ya, yb, w in zip(prompts, a, b, a_wins)]
  data.write_jsonl(path, rows)
  return rows


def evaluate_folder(config, policy, prompts, key, *, reference=None, baseline=None, ood_prompts=None,
                    temperatures=None, reference_key="evaluate.reference"):
  """evaluate.evaluate_policy of the policy folder `policy`, judged by config.oracle with config.evaluate's
  settings: KL against the `reference` folder (named `reference_key` in errors) and win rate against the
  `baseline` folder (each optional). Every folder is checked before any is loaded."""
  e = config.evaluate
  for name, folder in ((reference_key, reference), ("evaluate.baseline", baseline)):
    if folder:
      require_file(name, folder, folder=True)
  model, tokenizer = trainers.load_model(config.model, None, path=policy)
  reference_model = trainers.load_model(config.model, None, path=reference, key=reference_key)[0] if reference else None
  baseline_model = trainers.load_model(config.model, None, path=baseline, key="evaluate.baseline")[0] if baseline else None
  return evaluate.evaluate_policy(model, tokenizer, oracle.make_oracle(config.oracle), prompts, key,
                                  reference=reference_model, baseline=baseline_model, ood_prompts=ood_prompts,
                                  temperatures=tuple(temperatures or e.temperatures), max_new_tokens=e.max_new_tokens,
                                  batch_size=e.batch_size, tie_tolerance=e.tie_tolerance,
                                  max_prompt_length=config.data.max_prompt_length)
