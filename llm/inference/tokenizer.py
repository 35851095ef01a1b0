"""Tokenizers: HF tokenizers from a local folder (transformers.AutoTokenizer, no download), a byte-level
BPE tokenizer trained on a corpus with HF `tokenizers` (for the built-in task), prompts and completions
tokenized as TRL's DPOTrainer does it (the tokenizer's own special tokens, chat templates for
conversations, prompt and completion jointly), padded batches, and HH-RLHF's dialogue format
("\\n\\nHuman: ... \\n\\nAssistant: ...")."""

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


def is_conversation(value):
  """Whether `value` is a conversation: a tuple of (role, content) pairs (parse_conversation's form)."""
  return isinstance(value, tuple)


def parse_conversation(messages, where):
  """TRL's conversational form, a list of {"role", "content"} messages, as a hashable tuple of (role,
  content) pairs (other message keys are not kept)."""
  if not isinstance(messages, list) or not messages:
    raise ValueError(f"{where}: a conversation must be a non-empty list of messages")
  for m in messages:
    if not (isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)):
      raise ValueError(f"{where}: each message must have string 'role' and 'content', got {m!r}"[:200])
  return tuple((m["role"], m["content"]) for m in messages)


def messages(conversation):
  """A conversation (tuple of (role, content)) as TRL / apply_chat_template messages."""
  return [{"role": role, "content": content} for role, content in conversation]


def as_json(value, prompt=None):
  """A prompt or completion as written to JSONL: text as is, a conversation as a list of messages; with a
  conversational `prompt`, a text completion becomes one assistant message (TRL's conversational format)."""
  if is_conversation(value):
    return messages(value)
  if prompt is not None and is_conversation(prompt):
    return [{"role": "assistant", "content": value}]
  return value


def _chat_ids(tokenizer, conversation, **kwargs):
  if not tokenizer.chat_template:
    raise ValueError(f"{tokenizer.name_or_path or 'tokenizer'}: conversational data needs a tokenizer with a "
                     "chat template (tokenizer_config.json's chat_template)")
  return list(tokenizer.apply_chat_template(messages(conversation), tokenize=True, return_dict=True,
                                            **kwargs)["input_ids"])


def prompt_ids(tokenizer, prompt):
  """Token ids of a prompt as the checkpoint expects them, as TRL's DPOTrainer makes them: a conversation
  through the tokenizer's chat template with the generation prompt; text with the tokenizer's own special
  tokens (the BOS of Llama-style tokenizers, nothing for GPT-2 / Qwen-style ones)."""
  if is_conversation(prompt):
    return _chat_ids(tokenizer, prompt, add_generation_prompt=True)
  return list(tokenizer(prompt)["input_ids"])


def sequence_ids(tokenizer, prompt, completion):
  """Token ids of a prompt followed by a finished completion, tokenized as one sequence: a conversational
  prompt with the completion's turns (a text completion is the assistant's reply) through the chat template,
  which ends the turn; text prompt + completion + the eos token (unless the completion already ends with it)."""
  if is_conversation(prompt):
    reply = completion if is_conversation(completion) else (("assistant", completion),)
    return _chat_ids(tokenizer, prompt + reply)
  eos = "" if completion.endswith(tokenizer.eos_token) else tokenizer.eos_token
  return list(tokenizer(prompt + completion + eos)["input_ids"])


def common_prefix_length(a, b):
  n = 0
  for x, y in zip(a, b):
    if x != y:
      break
    n += 1
  return n


def split_completions(tokenizer, prompt, completions):
  """(prompt ids, [completion ids]) as TRL 1.16's DPOTrainer tokenizes a row: prompt and each completion
  tokenized jointly (sequence_ids) and split where the prompt's own ids and every joint sequence first differ,
  so a token merged across the boundary (SentencePiece's "▁" word starts) belongs to the completion and
  prompt + completion ids are exactly the joint tokenization."""
  own = prompt_ids(tokenizer, prompt)
  joint = [sequence_ids(tokenizer, prompt, c) for c in completions]
  cut = min(common_prefix_length(own, j) for j in joint)
  return own[:cut], [j[cut:] for j in joint]


def pad_rows(rows, pad_id, *, left):
  """(ids [B, L], mask [B, L]) int32 of lists of ids, L = the longest (at least 1), padded on one side."""
  length = max(1, max(len(r) for r in rows))
  ids = np.full((len(rows), length), pad_id, np.int32)
  mask = np.zeros((len(rows), length), np.int32)
  for i, row in enumerate(rows):
    if row:
      place = slice(length - len(row), length) if left else slice(0, len(row))
      ids[i, place] = row
      mask[i, place] = 1
  return ids, mask


def encode_prompts(tokenizer, prompts, max_length):
  """Left-padded (ids [B, P], mask [B, P]) int32 of prompt_ids with P = the longest prompt (at most
  max_length; longer prompts keep their last max_length tokens)."""
  return pad_rows([prompt_ids(tokenizer, p)[-max_length:] for p in prompts], tokenizer.pad_token_id, left=True)


def encode_examples(tokenizer, examples, max_prompt_length, max_response_length):
  """Rows (prompt, completion, ...) tokenized by split_completions: the prompts left-padded (keeping their
  last max_prompt_length tokens) and each completion column right-padded (keeping its first
  max_response_length tokens). Returns [(ids, mask)] for the prompt column and each completion column."""
  split = [split_completions(tokenizer, row[0], row[1:]) for row in examples]
  columns = [[p[-max_prompt_length:] for p, _ in split]]
  columns += [[c[i][:max_response_length] for _, c in split] for i in range(len(examples[0]) - 1)]
  return [pad_rows(rows, tokenizer.pad_token_id, left=i == 0) for i, rows in enumerate(columns)]


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
