"""Datasets from JSONL files (or JSON, Parquet and `datasets` folders, through the datasets library),
tokenized into fixed-shape numpy arrays, and the deterministic batch order the training loop resumes from.

Formats (one JSON object per line, or per row; the format is read from each row's keys):
  preferences: {"prompt", "chosen", "rejected"} (TRL's standard format), the same with lists of
               {"role", "content"} messages (TRL's conversational format; the prompt's turns, then each
               completion's), {"chosen", "rejected"} conversations with an implicit prompt (their shared
               first turns), or HH-RLHF's {"chosen", "rejected"} full dialogues (split after the last
               "\\n\\nAssistant:"; both must share the prompt);
  prompts:     {"prompt"} (text or messages), or an HH-RLHF dialogue under "chosen" / "text" (the part up
               to its last "\\n\\nAssistant:");
  SFT:         {"prompt", "response" or "completion"}, or a preference line (its chosen response, Table 1's
               "SFT" row).
A conversation is kept as a tuple of (role, content) pairs and rendered by the tokenizer's chat template
(llm.inference.tokenizer).
Filtering as in Appendix H: pairs with identical chosen and rejected responses and prompts longer than
max_prompt_length tokens are dropped, and the counts reported.
"""

import json
import os

import jax
import numpy as np

from gshf_jax import atomic
from llm.inference import tokenizer as tok


def read_jsonl(path, *, skip_malformed=False):
  """[(line number, object)] of a JSONL file (blank lines ignored) and the number of lines skipped.

  Raises:
    ValueError: "FILE:LINE: ..." for a line that is not UTF-8 or not a JSON object (unless skip_malformed).
  """
  rows, skipped = [], 0
  try:
    f = open(path, "rb")
  except OSError as e:
    raise ValueError(f"{path}: cannot open ({e.strerror})") from None
  with f:
    for number, raw in enumerate(f, 1):
      if not raw.strip():
        continue
      try:
        obj = json.loads(raw.decode("utf-8"))
        if not isinstance(obj, dict):
          raise ValueError("not a JSON object")
      except ValueError as e:
        if skip_malformed:
          skipped += 1
          continue
        raise ValueError(f"{path}:{number}: malformed line ({e}); set data.skip_malformed=true to skip") from None
      rows.append((number, obj))
  if not rows:
    raise ValueError(f"{path}: no examples")
  return rows, skipped


def read_records(path, *, skip_malformed=False):
  """[(number, object)] of a data file and the number of lines skipped: a JSONL file (read_jsonl, FILE:LINE
  errors), or through the datasets library a .json file (an array or JSON lines), a .parquet file (both
  streamed, nothing cached) or a folder written by Dataset.save_to_disk (its "train" split if a DatasetDict);
  their rows are numbered from 1 for FILE:ROW errors."""
  if not (os.path.isdir(path) or path.endswith((".json", ".parquet"))):
    return read_jsonl(path, skip_malformed=skip_malformed)
  try:
    import datasets
  except ImportError:
    raise ValueError(f"{path}: JSON, Parquet and saved datasets are read through the datasets library: "
                     'pip install -e ".[data]"') from None
  try:
    if os.path.isdir(path):
      loaded = datasets.load_from_disk(path)
      if isinstance(loaded, datasets.DatasetDict):
        if "train" not in loaded:
          raise ValueError(f"a DatasetDict without a 'train' split (splits: {sorted(loaded)})")
        loaded = loaded["train"]
    else:
      builder = "json" if path.endswith(".json") else "parquet"
      loaded = datasets.load_dataset(builder, data_files=os.path.abspath(path), split="train", streaming=True)
    rows = [(number, dict(row)) for number, row in enumerate(loaded, 1)]
  except Exception as e:  # the library's own errors (corrupt files, foreign folders) end in one line
    raise ValueError(f"{path}: not readable as a dataset ({type(e).__name__}: {e})") from None
  if not rows:
    raise ValueError(f"{path}: no examples")
  return rows, 0


def write_jsonl(path, rows):
  """Writes rows (dicts) as JSONL, atomically, from process 0 only (every process may call it)."""
  from llm.parallel import distributed
  if distributed.is_main_process():
    atomic.write_jsonl(path, rows)


def read_rows(path):
  """The objects of a JSONL file this project wrote (see read_jsonl for checked reading)."""
  return [obj for _, obj in read_jsonl(path)[0]]


def _text(obj, key, where):
  value = obj.get(key)
  if not isinstance(value, str):
    raise ValueError(f"{where}: {key!r} must be a string, got {type(value).__name__}")
  return value


def _prompt(obj, where):
  """The prompt of a line: a non-empty string or a conversation (with no prompt token, the first response
  token would be predicted from padding)."""
  if isinstance(obj.get("prompt"), list):
    return tok.parse_conversation(obj["prompt"], f"{where}: 'prompt'")
  prompt = _text(obj, "prompt", where)
  if not prompt:
    raise ValueError(f"{where}: empty prompt")
  return prompt


def _completion(obj, key, prompt, where):
  """A completion: text, or with a conversational prompt the turns that follow it (TRL's conversational
  format; a string is the assistant's reply)."""
  if tok.is_conversation(prompt) and isinstance(obj.get(key), list):
    return tok.parse_conversation(obj[key], f"{where}: {key!r}")
  return _text(obj, key, where)


def parse_preference(obj, where):
  """(prompt, chosen, rejected) of one preference line."""
  if "prompt" in obj:
    prompt = _prompt(obj, where)
    return prompt, _completion(obj, "chosen", prompt, where), _completion(obj, "rejected", prompt, where)
  if isinstance(obj.get("chosen"), list) and isinstance(obj.get("rejected"), list):  # implicit prompt
    chosen = tok.parse_conversation(obj["chosen"], f"{where}: 'chosen'")
    rejected = tok.parse_conversation(obj["rejected"], f"{where}: 'rejected'")
    cut = tok.common_prefix_length(chosen, rejected)
    if cut == 0 or cut == min(len(chosen), len(rejected)):
      raise ValueError(f"{where}: chosen and rejected conversations must share a prompt and then differ")
    return chosen[:cut], chosen[cut:], rejected[cut:]
  if "chosen" in obj and "rejected" in obj:
    prompt, chosen = tok.split_dialogue(_text(obj, "chosen", where))
    prompt_r, rejected = tok.split_dialogue(_text(obj, "rejected", where))
    if prompt != prompt_r:
      raise ValueError(f"{where}: HH-RLHF chosen and rejected dialogues have different prompts")
    return prompt, chosen, rejected
  raise ValueError(f"{where}: expected keys prompt/chosen/rejected or HH-RLHF chosen/rejected, got {sorted(obj)}")


def parse_prompt(obj, where):
  if "prompt" in obj:
    return _prompt(obj, where)
  for key in ("chosen", "text"):
    if key in obj:
      return tok.split_dialogue(_text(obj, key, where))[0]
  raise ValueError(f"{where}: expected a 'prompt' (or an HH-RLHF 'chosen' / 'text' dialogue), got {sorted(obj)}")


def parse_sft(obj, where):
  for key in ("response", "completion"):
    if key in obj:
      prompt = _prompt(obj, where)
      return prompt, _completion(obj, key, prompt, where)
  return parse_preference(obj, where)[:2]


def preference_row(prompt, chosen, rejected):
  """The JSONL line of a pair, in TRL's standard or conversational format (the prompt's)."""
  return {"prompt": tok.as_json(prompt), "chosen": tok.as_json(chosen, prompt),
          "rejected": tok.as_json(rejected, prompt)}


PARSERS = {"preferences": parse_preference, "prompts": parse_prompt, "sft": parse_sft}


def load_examples(path, kind, *, skip_malformed=False):
  """Parsed examples of `kind` ("preferences": (prompt, chosen, rejected), "prompts": str, "sft":
  (prompt, response)) and counts {"lines", "malformed"}. A line with missing or mistyped fields is
  malformed too (an error naming FILE:LINE, or skipped and counted under skip_malformed)."""
  rows, skipped = read_records(path, skip_malformed=skip_malformed)
  lines = len(rows) + skipped
  examples = []
  for number, obj in rows:
    try:
      examples.append(PARSERS[kind](obj, f"{path}:{number}"))
    except ValueError as e:
      if not skip_malformed:
        raise ValueError(f"{e}" if str(e).startswith(f"{path}:") else f"{path}:{number}: {e}") from None
      skipped += 1
  if not examples:
    raise ValueError(f"{path}: no valid {kind} examples ({skipped} malformed lines skipped)")
  return examples, {"lines": lines, "malformed": skipped}


def filter_preferences(examples, tokenizer, max_prompt_length):
  """Appendix H's filter: drops pairs with identical chosen and rejected, and prompts over
  max_prompt_length tokens. Returns (kept, {"identical": n, "long_prompt": n})."""
  kept, counts = [], {"identical": 0, "long_prompt": 0}
  for prompt, chosen, rejected in examples:
    if same_completion(chosen, rejected):
      counts["identical"] += 1
    elif not prompt_fits(tokenizer, prompt, max_prompt_length):
      counts["long_prompt"] += 1
    else:
      kept.append((prompt, chosen, rejected))
  return kept, counts


def same_completion(a, b):
  """Whether two completions are the same response (texts up to surrounding whitespace)."""
  return a.strip() == b.strip() if isinstance(a, str) and isinstance(b, str) else a == b


def prompt_fits(tokenizer, prompt, max_prompt_length):
  """Whether the prompt has at most max_prompt_length tokens as sampling sees it (tok.prompt_ids: with the
  tokenizer's special tokens or chat template); Appendix H drops longer ones."""
  return len(tok.prompt_ids(tokenizer, prompt)) <= max_prompt_length


def filter_prompts(prompts, tokenizer, max_prompt_length):
  kept = [p for p in prompts if prompt_fits(tokenizer, p, max_prompt_length)]
  return kept, {"long_prompt": len(prompts) - len(kept)}


def tokenize_preferences(tokenizer, examples, max_prompt_length, max_response_length, *, pad_to_max=False):
  """{"prompt_ids", "prompt_mask" [N, P] left-padded, "chosen_ids", "chosen_mask", "rejected_ids",
  "rejected_mask" [N, R] right-padded} int32, tokenized as TRL does (tok.split_completions: prompt and
  completion jointly, completions ending with the eos token or the chat template's end of turn). P, R: the
  longest in the data (capped), or with pad_to_max the maxima themselves (every dataset then has one shape,
  so compiled steps are reused)."""
  (prompt_ids, prompt_mask), (chosen_ids, chosen_mask), (rejected_ids, rejected_mask) = tok.encode_examples(
      tokenizer, examples, max_prompt_length, max_response_length)
  p = max_prompt_length if pad_to_max else prompt_ids.shape[1]
  r = max_response_length if pad_to_max else max(chosen_ids.shape[1], rejected_ids.shape[1])
  return {"prompt_ids": pad_left(prompt_ids, p, tokenizer.pad_token_id), "prompt_mask": pad_left(prompt_mask, p, 0),
          "chosen_ids": pad_right(chosen_ids, r, tokenizer.pad_token_id), "chosen_mask": pad_right(chosen_mask, r, 0),
          "rejected_ids": pad_right(rejected_ids, r, tokenizer.pad_token_id),
          "rejected_mask": pad_right(rejected_mask, r, 0)}


def tokenize_sft(tokenizer, examples, max_prompt_length, max_response_length, *, pad_to_max=False):
  """{"prompt_ids", "prompt_mask", "response_ids", "response_mask"} int32 (as tokenize_preferences)."""
  (prompt_ids, prompt_mask), (response_ids, response_mask) = tok.encode_examples(
      tokenizer, examples, max_prompt_length, max_response_length)
  p = max_prompt_length if pad_to_max else prompt_ids.shape[1]
  r = max_response_length if pad_to_max else response_ids.shape[1]
  return {"prompt_ids": pad_left(prompt_ids, p, tokenizer.pad_token_id), "prompt_mask": pad_left(prompt_mask, p, 0),
          "response_ids": pad_right(response_ids, r, tokenizer.pad_token_id),
          "response_mask": pad_right(response_mask, r, 0)}


def pad_left(x, length, value):
  return np.pad(x, ((0, 0), (length - x.shape[1], 0)), constant_values=value)


def pad_right(x, length, value):
  return np.pad(x, ((0, 0), (0, length - x.shape[1])), constant_values=value)


def num_rows(arrays):
  return len(next(iter(arrays.values())))


def batch_indices(rng, step, num_examples, batch_size):
  """Rows of the global batch of optimizer step `step`: epoch e = step // (N // B) visits the rows in the
  order jax.random.permutation(fold_in(rng, e), N) (the last N mod B of each epoch are left out). A
  function of (rng, step) only, so a resumed run continues with exactly the batches it would have had."""
  per_epoch = num_examples // batch_size
  epoch, k = divmod(step, per_epoch)
  order = np.asarray(jax.random.permutation(jax.random.fold_in(rng, epoch), num_examples))
  return order[k * batch_size:(k + 1) * batch_size]


def microbatches(arrays, rows, grad_accum):
  """{name: [grad_accum, len(rows) / grad_accum, ...]} of the selected rows. With a "response_mask" (SFT)
  also "token_weight" = grad_accum / (response tokens of all the rows), the same in every row: a loss that
  sums its micro-batch's token log-likelihoods times it and is averaged over the micro-batches (as the train
  step does) is the mean over every response token of the step, however the tokens fall into micro-batches."""
  micro = {k: v[rows].reshape(grad_accum, len(rows) // grad_accum, *v.shape[1:]) for k, v in arrays.items()}
  if "response_mask" in micro:
    tokens = max(int(micro["response_mask"].sum()), 1)
    micro["token_weight"] = np.full(micro["response_mask"].shape[:2], grad_accum / tokens, np.float32)
  return micro
