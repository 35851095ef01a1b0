"""Tokenizers: a BPE tokenizer trained on a corpus round-trips text, saves and loads through
transformers.AutoTokenizer from a folder; prompt/response batches are padded on the right side; HH-RLHF
dialogues format and split at the last assistant turn; preference rows (standard, conversational, implicit
prompt) tokenize to TRL 1.16's DPOTrainer ids with a SentencePiece-style (Llama: BOS, "▁" word starts) and a
byte-level (Qwen: ChatML, no BOS) tokenizer, each with a chat template."""

import types

import numpy as np
import pytest

from llm.inference import tokenizer as tok
from llm.training import data

CORPUS = ["the movie was great, but the ending was slow.", "not bad at all!", "a truly awful, boring film.",
          "I loved the acting; the plot was fine."] * 20


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  folder = tmp_path_factory.mktemp("tok")
  tok.train_tokenizer(CORPUS, 300, folder)
  return tok.load_tokenizer(str(folder))


def test_trained_tokenizer_round_trips_and_loads_from_a_folder(trained):
  assert (trained.pad_token_id, trained.eos_token_id, trained.bos_token_id) == (0, 1, 2)
  assert len(trained) <= 300
  for text in ("the ending was great!", "Unseen wörds → bytes ✓"):
    assert trained.decode(trained.encode(text, add_special_tokens=False)) == text
  assert len(trained.encode("the movie was great", add_special_tokens=False)) < len("the movie was great")


def test_prompt_and_response_padding(trained):
  ids, mask = tok.encode_prompts(trained, ["the movie", "a truly awful, boring film."], max_length=64)
  assert mask[0, 0] == 0 and mask[0, -1] == 1 and mask[1].all()
  assert trained.decode(ids[0][mask[0] == 1]) == "the movie"
  short, short_mask = tok.encode_prompts(trained, ["a truly awful, boring film."], max_length=3)
  assert short.shape == (1, 3) and short_mask.all()
  _, (rids, rmask) = tok.encode_examples(trained, [("the", " great"), ("the", " not bad at all!")], 64, 64)
  assert rmask[0, 0] == 1 and rmask[0, -1] == 0
  assert rids[0][rmask[0].sum() - 1] == trained.eos_token_id
  np.testing.assert_array_equal(rids[rmask == 0], trained.pad_token_id)
  _, (cut, cut_mask) = tok.encode_examples(trained, [("the", " not bad at all!")], 64, 2)
  assert cut.shape == (1, 2) and cut_mask.all() and trained.eos_token_id not in cut  # kept its first tokens


CHAT_CORPUS = CORPUS + ["[INST] what do you think? [/INST] I think so.", "user\nassistant\nHuman: Assistant:"] * 20


def sentencepiece_style(folder):
  """A Llama-2-style tokenizer (transformers' conversion of a SentencePiece model): spaces become "▁" and
  a "▁" dummy prefix is prepended, BPE with byte fallback, a BOS added by the post-processor, Llama-2's
  [INST] chat template."""
  import tokenizers
  import transformers
  from tokenizers import decoders, models, normalizers, pre_tokenizers, processors, trainers
  bpe = tokenizers.Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
  bpe.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
  bpe.pre_tokenizer = pre_tokenizers.Split("▁", behavior="merged_with_next")  # pieces never span words
  bpe.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                   decoders.Strip(" ", 1, 0)])
  bpe.train_from_iterator(CHAT_CORPUS, trainers.BpeTrainer(vocab_size=400, special_tokens=["<unk>", "<s>", "</s>"],
                                                           show_progress=False))
  bpe.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", bpe.token_to_id("<s>"))])
  template = ("{{ bos_token }}{% for m in messages %}{% if m['role'] == 'user' %}[INST] {{ m['content'] }} [/INST]"
              "{% else %} {{ m['content'] }}{{ eos_token }}{% endif %}{% endfor %}")
  transformers.PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                                       chat_template=template).save_pretrained(folder)
  return tok.load_tokenizer(str(folder))


def byte_level_style(folder):
  """A Qwen-style tokenizer: byte-level BPE, no BOS, eos <|im_end|>, pad <|endoftext|>, ChatML template."""
  import tokenizers
  import transformers
  from tokenizers import decoders, models, pre_tokenizers, trainers
  bpe = tokenizers.Tokenizer(models.BPE())
  bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  bpe.decoder = decoders.ByteLevel()
  bpe.train_from_iterator(CHAT_CORPUS, trainers.BpeTrainer(
      vocab_size=400, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
      initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False))
  template = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
              "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
  transformers.PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                       chat_template=template).save_pretrained(folder)
  return tok.load_tokenizer(str(folder))


@pytest.fixture(scope="module", params=["sentencepiece", "byte_level"])
def chat_tokenizer(request, tmp_path_factory):
  build = sentencepiece_style if request.param == "sentencepiece" else byte_level_style
  return build(tmp_path_factory.mktemp(request.param))


def user(text):
  return {"role": "user", "content": text}


def assistant(text):
  return {"role": "assistant", "content": text}


ROWS = [{"prompt": "\n\nHuman: what do you think?\n\nAssistant:", "chosen": " I think so.", "rejected": " not bad"},
        {"prompt": "the movie was", "chosen": "great", "rejected": " awful, boring"},
        {"prompt": "I loved the act", "chosen": "ing; the plot was fine.", "rejected": "ing."},  # merges across
        {"prompt": [user("what do you think?")], "chosen": [assistant("I think so.")], "rejected": [assistant("no")]},
        {"prompt": [user("Hi"), assistant("Hello!"), user("the movie?")], "chosen": "great",
         "rejected": [assistant("awful")]},
        {"chosen": [user("the plot?"), assistant("fine.")], "rejected": [user("the plot?"), assistant("slow.")]}]


def trl_tokenize_row(tokenizer, row):
  """TRL 1.16 DPOTrainer._prepare_dataset, transcribed: the prompt extracted from the shared first turns,
  eos appended to text completions, prompt / prompt + completion tokenized with the tokenizer's defaults or
  the chat template, the completion starting where they first differ."""
  if "prompt" not in row:
    cut = next(i for i, (a, b) in enumerate(zip(row["chosen"], row["rejected"])) if a != b)
    row = {"prompt": row["chosen"][:cut], "chosen": row["chosen"][cut:], "rejected": row["rejected"][cut:]}
  if isinstance(row["prompt"], list):
    wrap = lambda c: c if isinstance(c, list) else [assistant(c)]  # noqa: E731
    ids = lambda m, **kw: tokenizer.apply_chat_template(m, tokenize=True, return_dict=True, **kw)["input_ids"]  # noqa: E731
    prompt = ids(row["prompt"], add_generation_prompt=True)
    full = [ids(row["prompt"] + wrap(row[k])) for k in ("chosen", "rejected")]
  else:
    prompt = tokenizer(row["prompt"])["input_ids"]
    full = [tokenizer(row["prompt"] + row[k] + tokenizer.eos_token)["input_ids"] for k in ("chosen", "rejected")]
  cut = min(next((i for i, (a, b) in enumerate(zip(prompt, f)) if a != b), min(len(prompt), len(f))) for f in full)
  return prompt[:cut], full[0][cut:], full[1][cut:]


def unpadded(arrays, i):
  return [list(arrays[f"{k}_ids"][i][arrays[f"{k}_mask"][i] == 1]) for k in ("prompt", "chosen", "rejected")]


def test_preference_rows_tokenize_as_trl_does(chat_tokenizer):
  t = chat_tokenizer
  examples = [data.parse_preference(row, f"rows:{i}") for i, row in enumerate(ROWS)]
  arrays = data.tokenize_preferences(t, examples, 64, 64)
  for i, row in enumerate(ROWS):
    assert unpadded(arrays, i) == [list(x) for x in trl_tokenize_row(t, row)], row
  # BOS exactly when the tokenizer adds one (Llama style), never twice through a chat template
  starts = arrays["prompt_ids"][np.arange(len(ROWS)), arrays["prompt_mask"].argmax(1)]
  assert (starts == t.bos_token_id).all() if t.bos_token_id is not None else t.bos_token is None
  assert all(list(unpadded(arrays, i)[0]).count(t.bos_token_id) <= 1 for i in range(len(ROWS)))
  # finished responses end with eos (text) or the template's end of turn; the SFT form tokenizes the same
  assert all(unpadded(arrays, i)[1][-1] == t.eos_token_id or t.bos_token is None for i in range(3))
  # a word split by the prompt's end is tokenized whole: the prompt gives up its last token to the completion
  own = t(ROWS[2]["prompt"])["input_ids"]
  assert len(unpadded(arrays, 2)[0]) < len(own) and t.decode(unpadded(arrays, 2)[1]).lstrip().startswith("acting")
  sft = data.tokenize_sft(t, [e[:2] for e in examples], 64, 64)
  chosen = [list(sft["response_ids"][i][sft["response_mask"][i] == 1]) for i in range(len(ROWS))]
  assert chosen == [unpadded(arrays, i)[1] for i in range(len(ROWS))]


def test_joint_tokenization_keeps_sentencepiece_word_starts(tmp_path):
  t = sentencepiece_style(tmp_path)
  prompt, response = "\n\nHuman: what do you think?\n\nAssistant:", " I think so."
  (p, (c,)) = tok.split_completions(t, prompt, [response])
  assert p + c == t(prompt + response + t.eos_token)["input_ids"]
  alone = t(response, add_special_tokens=False)["input_ids"]
  assert c[:-1] != alone  # encoded alone, the response starts with a word start the model never sees there
  assert t.convert_ids_to_tokens(c[0]).startswith("▁")


def test_conversational_rows_need_a_chat_template_and_write_back_as_trl_rows(trained):
  example = data.parse_preference(ROWS[3], "rows:3")
  assert data.preference_row(*example) == ROWS[3]
  assert data.preference_row(example[0], "yes", "no")["chosen"] == [assistant("yes")]
  with pytest.raises(ValueError, match="chat template"):
    data.tokenize_preferences(trained, [example], 64, 64)
  with pytest.raises(ValueError, match="rows:9: 'prompt': each message"):
    data.parse_preference({"prompt": [{"role": "user"}], "chosen": "a", "rejected": "b"}, "rows:9")
  with pytest.raises(ValueError, match="share a prompt"):
    data.parse_preference({"chosen": [user("a")], "rejected": [user("b")]}, "rows:3")


def test_the_same_ids_as_trl_itself(chat_tokenizer):
  """TRL's own code (installed with the test extra), called on a datasets.Dataset of the same rows."""
  pytest.importorskip("trl")
  import datasets
  from trl.trainer.dpo_trainer import DPOTrainer
  t = chat_tokenizer
  args = types.SimpleNamespace(dataset_num_proc=None, max_length=None, truncation_mode="keep_start")
  for rows in (ROWS[:3], [ROWS[3]], [ROWS[5]]):  # one format per dataset, as TRL reads it
    theirs = DPOTrainer._prepare_dataset(types.SimpleNamespace(_tokenizer=t), datasets.Dataset.from_list(rows), t,
                                         args, "train")
    arrays = data.tokenize_preferences(t, [data.parse_preference(r, "rows") for r in rows], 64, 64)
    for i, row in enumerate(theirs):
      assert unpadded(arrays, i) == [row["prompt_ids"], row["chosen_ids"], row["rejected_ids"]]


def test_hh_rlhf_format_and_split():
  prompt = tok.format_dialogue(["Hi", "Hello! How can I help?", "Tell me a joke."])
  assert prompt == "\n\nHuman: Hi\n\nAssistant: Hello! How can I help?\n\nHuman: Tell me a joke.\n\nAssistant:"
  full = prompt + " Why did the chicken cross the road?"
  assert tok.split_dialogue(full) == (prompt, " Why did the chicken cross the road?")
  with pytest.raises(ValueError, match="Assistant"):
    tok.split_dialogue("\n\nHuman: no answer")
  with pytest.raises(ValueError, match="vocab_size"):
    tok.train_tokenizer(CORPUS, 100)
