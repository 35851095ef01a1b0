"""Tokenizers: a BPE tokenizer trained on a corpus round-trips text, saves and loads through
transformers.AutoTokenizer from a folder; prompt/response batches are padded on the right side; HH-RLHF
dialogues format and split at the last assistant turn."""

import numpy as np
import pytest

from llm.inference import tokenizer as tok

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
  rids, rmask = tok.encode_responses(trained, [" great", " not bad at all!"], max_length=64)
  assert rmask[0, 0] == 1 and rmask[0, -1] == 0
  assert rids[0][rmask[0].sum() - 1] == trained.eos_token_id
  np.testing.assert_array_equal(rids[rmask == 0], trained.pad_token_id)


def test_hh_rlhf_format_and_split():
  prompt = tok.format_dialogue(["Hi", "Hello! How can I help?", "Tell me a joke."])
  assert prompt == "\n\nHuman: Hi\n\nAssistant: Hello! How can I help?\n\nHuman: Tell me a joke.\n\nAssistant:"
  full = prompt + " Why did the chicken cross the road?"
  assert tok.split_dialogue(full) == (prompt, " Why did the chicken cross the road?")
  with pytest.raises(ValueError, match="Assistant"):
    tok.split_dialogue("\n\nHuman: no answer")
  with pytest.raises(ValueError, match="vocab_size"):
    tok.train_tokenizer(CORPUS, 100)
