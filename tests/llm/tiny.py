"""Tiny local assets for the trainer tests (also imported by their subprocess workers): a BPE tokenizer
trained on a synthetic corpus, a tiny random Llama saved as an HF folder with that tokenizer, and JSONL
files of an easy preference task (chosen responses are positive words, rejected ones negative)."""

import json
import os

import numpy as np

POSITIVE = ["good", "great", "nice", "lovely", "superb", "fine", "happy", "bright"]
NEGATIVE = ["bad", "awful", "poor", "sad", "grim", "dull", "ugly", "weak"]
SUBJECTS = ["the film", "the food", "the room", "the song", "the game", "the book", "the show", "the park"]


def pairs(n, seed):
  """n (prompt, chosen, rejected) triples: chosen praises the subject, rejected criticizes it."""
  rng = np.random.default_rng(seed)
  out = []
  for _ in range(n):
    subject = SUBJECTS[rng.integers(len(SUBJECTS))]
    good, bad = POSITIVE[rng.integers(len(POSITIVE))], NEGATIVE[rng.integers(len(NEGATIVE))]
    out.append((f"Review {subject}:", f" {subject} is {good}.", f" {subject} is {bad}."))
  return out


def write_jsonl(path, rows):
  with open(path, "w") as f:
    for row in rows:
      f.write(json.dumps(row) + "\n")
  return str(path)


def build(folder, *, hidden=32, layers=2, seed=0):
  """Writes folder/{policy (HF Llama + tokenizer), train.jsonl, eval.jsonl, prompts.jsonl}; returns paths."""
  import transformers

  from llm.inference import tokenizer
  from llm.models import config as model_config
  from llm.models import hf_io
  from llm.models.transformer import init_model

  os.makedirs(folder, exist_ok=True)
  train, held_out = pairs(64, seed), pairs(16, seed + 1)
  corpus = [p + c for p, c, _ in train] + [p + r for p, _, r in train]
  tok = tokenizer.train_tokenizer(corpus, vocab_size=300)
  config = model_config.from_hf(transformers.LlamaConfig(
      vocab_size=len(tok), hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
      pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, bos_token_id=tok.bos_token_id))
  policy = os.path.join(folder, "policy")
  hf_io.save_hf_checkpoint(init_model(config, seed), policy)
  tok.save_pretrained(policy)
  as_rows = lambda triples: [{"prompt": p, "chosen": c, "rejected": r} for p, c, r in triples]
  return {"policy": policy,
          "train": write_jsonl(os.path.join(folder, "train.jsonl"), as_rows(train)),
          "eval": write_jsonl(os.path.join(folder, "eval.jsonl"), as_rows(held_out)),
          "prompts": write_jsonl(os.path.join(folder, "prompts.jsonl"), [{"prompt": p} for p, _, _ in held_out])}


def gold_reward(prompts, responses):
  """The easy task's gold reward: +1 per positive word, -1 per negative word (a callable oracle)."""
  score = lambda text: sum(w.strip(".,") in POSITIVE for w in text.split()) - sum(
      w.strip(".,") in NEGATIVE for w in text.split())
  return [float(score(r)) for r in responses]


def overrides(assets, out, **extra):
  """CLI overrides that train the tiny policy quickly (batch 8, no progress bar, no TensorBoard)."""
  items = {"model.path": assets["policy"], "data.train": assets["train"], "data.eval": assets["eval"],
           "output_dir": str(out), "train.batch_size": 8, "train.progress": "false", "train.tensorboard": "false",
           **extra}
  return [f"{k}={v}" for k, v in items.items()]
