"""Tokenizers: HF tokenizers from a local folder (transformers.AutoTokenizer, no download), a byte-level
BPE tokenizer trained on a corpus with HF `tokenizers` (for the built-in task), batches of left-padded
prompts, and HH-RLHF's dialogue format ("\\n\\nHuman: ... \\n\\nAssistant: ...")."""

import numpy as np

HUMAN, ASSISTANT = "\n\nHuman:", "\n\nAssistant:"
SPECIAL_TOKENS = {"pad_token": "<pad>", "eos_token": "<eos>", "bos_token": "<bos>"}


def load_tokenizer(path):
  """transformers.AutoTokenizer from a local folder; a missing pad token becomes the eos token."""
  import transformers
  try:
    tokenizer = transformers.AutoTokenizer.from_pretrained(path, local_files_only=True)
  except (OSError, ValueError) as e:  # missing or malformed tokenizer / config files
    raise ValueError(f"{path}: cannot load a tokenizer ({' '.join(str(e).split())})") from None
  if tokenizer.pad_token is None:
    if tokenizer.eos_token is None:
      raise ValueError(f"{path}: tokenizer has neither a pad nor an eos token")
    tokenizer.pad_token = tokenizer.eos_token
  return tokenizer


def train_tokenizer(texts, vocab_size, path=None):
  """A byte-level BPE tokenizer trained on `texts` (HF tokenizers), with <pad>=0, <eos>=1, <bos>=2;
  saved to `path` (loadable by load_tokenizer) when given. Returns a PreTrainedTokenizerFast."""
  import tokenizers
  import transformers
  from tokenizers import decoders, models, pre_tokenizers, trainers

  if vocab_size < 260:
    raise ValueError(f"vocab_size must be >= 260 (256 bytes + specials), got {vocab_size}")
  bpe = tokenizers.Tokenizer(models.BPE())
  bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  bpe.decoder = decoders.ByteLevel()
  trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS.values()),
                                initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
  bpe.train_from_iterator(texts, trainer)
  tokenizer = transformers.PreTrainedTokenizerFast(tokenizer_object=bpe, **SPECIAL_TOKENS)
  if path is not None:
    tokenizer.save_pretrained(path)
  return tokenizer


def encode_prompts(tokenizer, prompts, max_length):
  """Left-padded (ids [B, P], mask [B, P]) int32 with P = the longest prompt (at most max_length; longer
  prompts keep their last max_length tokens)."""
  rows = [tokenizer.encode(p, add_special_tokens=False)[-max_length:] for p in prompts]
  length = max(1, max(len(r) for r in rows))
  ids = np.full((len(rows), length), tokenizer.pad_token_id, np.int32)
  mask = np.zeros((len(rows), length), np.int32)
  for i, row in enumerate(rows):
    if row:
      ids[i, length - len(row):] = row
      mask[i, length - len(row):] = 1
  return ids, mask


def encode_responses(tokenizer, responses, max_length, *, add_eos=True):
  """Right-padded (ids [B, R], mask [B, R]) int32, each response followed by eos (truncated to max_length)."""
  eos = [tokenizer.eos_token_id] if add_eos else []
  rows = [(tokenizer.encode(r, add_special_tokens=False) + eos)[:max_length] for r in responses]
  length = max(1, max(len(r) for r in rows))
  ids = np.full((len(rows), length), tokenizer.pad_token_id, np.int32)
  mask = np.zeros((len(rows), length), np.int32)
  for i, row in enumerate(rows):
    ids[i, :len(row)] = row
    mask[i, :len(row)] = 1
  return ids, mask


def format_dialogue(turns):
  """HH-RLHF text of alternating (human, assistant, human, ...) turns; ends with "\\n\\nAssistant:" when
  the last turn is the human's (a prompt)."""
  text = "".join(f"{HUMAN if i % 2 == 0 else ASSISTANT} {turn.strip()}" for i, turn in enumerate(turns))
  return text + ASSISTANT if len(turns) % 2 == 1 else text


def split_dialogue(text):
  """(prompt, response) of an HH-RLHF dialogue, split after its last "\\n\\nAssistant:" (the prompt keeps
  it). Raises ValueError when there is none."""
  cut = text.rfind(ASSISTANT)
  if cut < 0:
    raise ValueError(f"no {ASSISTANT!r} in dialogue {text[:80]!r}")
  cut += len(ASSISTANT)
  return text[:cut], text[cut:]
