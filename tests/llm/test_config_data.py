"""llm.training.config (YAML + overrides, validation) and llm.training.data (JSONL formats, Appendix H filter, batch order)."""

import glob
import json
import os

import jax
import numpy as np
import pytest

from llm.inference import tokenizer as tok
from llm.training import config as C
from llm.training import data

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_precedence_defaults_file_command_section_overrides(tmp_path):
  assert C.load_config("dpo").train.learning_rate == 1e-6  # Table 8's DPO default
  assert C.load_config("sft").train.batch_size == 12  # Table 8's SFT-RLHF
  path = tmp_path / "c.yaml"
  path.write_text("train: {learning_rate: 2.0e-5, mesh: {fsdp: -1}}\ncommands:\n  dpo: {dpo: {beta: 0.3}}\n"
                  "model: {path: m}\n")
  dpo = C.load_config("dpo", str(path), ["train.batch_size=4", "evaluate.temperatures=[0.5, 1]"])
  assert (dpo.train.learning_rate, dpo.dpo.beta, dpo.train.batch_size, dpo.train.mesh) == (2e-5, 0.3, 4, {"fsdp": -1})
  assert dpo.evaluate.temperatures == [0.5, 1.0]
  assert C.load_config("sft", str(path)).dpo.beta == 0.1  # the dpo section applies only to dpo
  assert C.load_config("dpo", str(path), ["train.learning_rate=1e-3"]).train.learning_rate == 1e-3  # "1e-3" is a str in YAML


@pytest.mark.parametrize("text, overrides, message", [
    ("train: {learnig_rate: 1.0}\n", [], "unknown key 'train.learnig_rate'; accepted: learning_rate"),
    ("trian: {}\n", [], "unknown key 'trian'"),
    ("", ["train.batch_size=many"], "train.batch_size must be int, got 'many'"),
    ("", ["train.batch_size=0"], "train.batch_size must be > 0"),
    ("", ["train.batch_size=6", "train.grad_accum=4"], "must be a multiple of train.grad_accum"),
    ("", ["dpo.loss=kto"], "dpo.loss=kto: unknown pairwise loss 'kto'; registered: ['aot', 'aot_unpaired'"),
    ("", ["dpo.loss=dpo,sft", "dpo.loss_weights=[1.0]"], "loss weights: 1 weights for 2 losses ['dpo', 'sft']"),
    ("", ["dpo.loss=dpo,sft", "dpo.discopop_tau=0.2"], "none of the losses ['dpo', 'sft'] takes tau (got 0.2)"),
    ("", ["dpo.loss=dpo,sft", "dpo.loss_weights=[1.0, -1]"], "dpo.loss_weights must be numbers >= 0, got [1.0, -1.0]"),
    ("", ["dpo.loss=exo_pair"], "the exo_pair loss needs label_smoothing > 0"),
    ("", ["dpo.label_smoothing=0.7"], "dpo.label_smoothing must be in [0, 0.5]"),
    ("", ["dpo.uncertainty_coef=1"], "needs dpo.reward_ensemble"),
    ("", ["dpo.loss=ipo", "dpo.uncertainty_coef=1", "dpo.reward_ensemble=x"], "the ipo loss takes no margin"),
    ("", ["dpo.loss=hinge", "dpo.label_smoothing=0.3"], "the hinge loss takes no label_smoothing"),
    ("", ["dpo.loss=ipo", "dpo.label_smoothing=0.1"], "dpo.loss=ipo: the ipo loss takes no label_smoothing"),
    ("model: {dtype: bfloat16}\n", [], "'model.dtype' is ambiguous; set model.param_dtype"),
    ("", ["train.learning_rate=.inf"], "train.learning_rate must be a finite number, got inf"),
    ("", ["train.max_grad_norm=.nan"], "train.max_grad_norm must be a finite number, got nan"),
    ("", ["evaluate.temperatures=[1.0, .inf]"], "evaluate.temperatures must be a finite number"),
    ("", ["train.mesh={model: 2}"], "train.mesh: unknown axes ['model']"),
    ("", ["train"], "expected key=value"),
    ("commands: {ppo: {}}\n", [], "unknown commands ['ppo']"),
    ("train: [1, 2\n", [], "not valid YAML"),
])
def test_bad_configs_name_the_key(tmp_path, text, overrides, message):
  path = tmp_path / "bad.yaml"
  path.write_text(text)
  with pytest.raises(ValueError, match=None) as info:
    C.load_config("dpo", str(path), overrides)
  assert message in str(info.value)


def test_missing_files_are_named(tmp_path):
  with pytest.raises(ValueError, match="--config .*nope.yaml: no such file"):
    C.load_config("sft", str(tmp_path / "nope.yaml"))
  with pytest.raises(ValueError, match="data.train: .*missing.jsonl: no such file"):
    C.require_file("data.train", str(tmp_path / "missing.jsonl"))
  with pytest.raises(ValueError, match="model.path is required"):
    C.require_file("model.path", "", folder=True)


def test_a_cached_hub_repo_id_resolves_to_its_snapshot_and_nothing_is_downloaded(tmp_path, monkeypatch):
  """model.path (and every model-folder key) may be a repo id already in the Hugging Face cache, laid out
  as huggingface_hub writes it: refs/main names the snapshot folder."""
  import huggingface_hub
  monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
  monkeypatch.setenv("HF_HUB_OFFLINE", "1")
  repo = tmp_path / "hub" / "models--acme--tiny-llama"
  commit = "0123456789abcdef0123456789abcdef01234567"
  (repo / "snapshots" / commit).mkdir(parents=True)
  (repo / "snapshots" / commit / "config.json").write_text("{}")
  (repo / "refs").mkdir()
  (repo / "refs" / "main").write_text(commit)
  config = C.load_config("dpo", None, ["model.path=acme/tiny-llama", "dpo.reference=acme/tiny-llama",
                                       f"evaluate.reference={tmp_path}"])
  assert config.model.path == config.dpo.reference == str(repo / "snapshots" / commit)
  assert config.evaluate.reference == str(tmp_path)  # a local folder stays as it is
  config = C.load_config("dpo", None, ["model.path=acme/not-cached"])
  assert config.model.path == "acme/not-cached"
  with pytest.raises(ValueError, match="model.path: acme/not-cached: no such folder \\(nor a Hugging Face repo id in "
                                       "the local cache; nothing is downloaded\\)"):
    C.require_file("model.path", config.model.path, folder=True)


@pytest.mark.parametrize("path", sorted(set(glob.glob(os.path.join(ROOT, "configs", "*.yaml")))
                                         - set(glob.glob(os.path.join(ROOT, "configs", "builtin_*.yaml")))))
def test_shipped_configs_validate_for_every_command(path):
  for command in C.COMMANDS:
    C.load_config(command, path)


def test_builtin_size_files(tmp_path):
  from llm.builtin import run as builtin
  sizes = builtin.load_sizes(os.path.join(ROOT, "configs", "builtin_gpu.yaml"))
  assert sizes.hidden == 256 and sizes.temperatures == (0.5, 0.7, 1.0, 1.3)
  bad = tmp_path / "bad.yaml"
  for text, message in (("hiden: 3\n", "unknown keys \\['hiden'\\]"),
                        ("ensemble: 1\nsweep_betas: [0.2]\n", "ensemble must be >= 2"),
                        ("sweep_betas: [0.2, .nan]\n", "sweep_betas must be finite numbers > 0"),
                        ("seeds: 0\n", "\\['seeds'\\] must be integers >= 1")):
    bad.write_text(text)
    with pytest.raises(ValueError, match=message):
      builtin.load_sizes(str(bad))
  bad.write_text("sweep_betas: [0.2]\nseeds: 5\n")
  assert builtin.load_sizes(str(bad)).sweep_betas == (0.2,) and builtin.load_sizes(str(bad)).seeds == 5


def test_builtin_run_rejects_bad_replicate_counts(tmp_path, capsys):
  from llm import cli
  assert cli.main(["--seeds", "0", "--out", str(tmp_path)]) == 2
  assert capsys.readouterr().err.strip() == "python -m llm builtin: error: --seeds must be an integer >= 1, got 0"
  assert not os.listdir(tmp_path)  # refused before any work


def write(path, lines):
  path.write_text("\n".join(lines) + "\n")
  return str(path)


def test_formats_and_the_hh_rlhf_split(tmp_path):
  hh = tok.format_dialogue(["hi", "hello", "how are you?"])
  lines = [json.dumps({"prompt": "p", "chosen": " a", "rejected": " b"}),
           "",
           json.dumps({"chosen": hh + " fine", "rejected": hh + " bad"})]
  prefs, counts = data.load_examples(write(tmp_path / "p.jsonl", lines), "preferences")
  assert prefs == [("p", " a", " b"), (hh, " fine", " bad")] and counts == {"lines": 2, "malformed": 0}
  prompts, _ = data.load_examples(write(tmp_path / "q.jsonl", [json.dumps({"prompt": "x"}), lines[2]]), "prompts")
  assert prompts == ["x", hh]
  sft, _ = data.load_examples(write(tmp_path / "s.jsonl", [json.dumps({"prompt": "x", "response": " y"}), lines[0]]),
                              "sft")
  assert sft == [("x", " y"), ("p", " a")]


@pytest.mark.parametrize("line, message", [
    ("{not json", "malformed line"),
    ("[1, 2]", "not a JSON object"),
    (json.dumps({"prompt": "p", "chosen": "a"}), "'rejected' must be a string"),
    (json.dumps({"chosen": "\n\nHuman: a\n\nAssistant: x", "rejected": "\n\nHuman: b\n\nAssistant: y"}),
     "different prompts"),
    (json.dumps({"text": "no assistant turn"}), "in dialogue 'no assistant turn'"),
])
def test_malformed_lines_name_file_and_line_or_are_skipped_and_counted(tmp_path, line, message):
  good = json.dumps({"prompt": "p", "chosen": " a", "rejected": " b"})
  path = write(tmp_path / "bad.jsonl", [good, line, good])
  kind = "prompts" if "text" in line else "preferences"
  with pytest.raises(ValueError) as info:
    data.load_examples(path, kind)
  assert "bad.jsonl:2:" in str(info.value) and message in str(info.value)
  examples, counts = data.load_examples(path, kind, skip_malformed=True)
  assert len(examples) == 2 and counts == {"lines": 3, "malformed": 1}


def test_appendix_h_filter_counts(tmp_path):
  tokenizer = tok.train_tokenizer(["short prompt and some words " * 4], vocab_size=300)
  examples = [("short", " a", " b"), ("short", " same", " same "), ("word " * 50, " a", " b")]
  kept, counts = data.filter_preferences(examples, tokenizer, max_prompt_length=20)
  assert kept == [examples[0]] and counts == {"identical": 1, "long_prompt": 1}
  arrays = data.tokenize_preferences(tokenizer, kept * 2, 20, 8)
  assert {k: v.shape[0] for k, v in arrays.items()} == dict.fromkeys(arrays, 2)
  assert arrays["chosen_ids"].shape == arrays["rejected_ids"].shape  # one response length for both sides


def test_batch_order_is_a_function_of_key_and_step():
  rng = jax.random.key(3)
  epoch = [data.batch_indices(rng, s, 10, 3) for s in range(3)]  # 3 steps per epoch, 1 row left out
  flat = np.concatenate(epoch)
  assert len(set(flat)) == 9 and np.array_equal(data.batch_indices(rng, 1, 10, 3), epoch[1])
  assert not np.array_equal(np.concatenate([data.batch_indices(rng, s, 10, 3) for s in range(3, 6)]), flat)
  micro = data.microbatches({"x": np.arange(20).reshape(10, 2)}, epoch[0][:2], 2)["x"]
  assert micro.shape == (2, 1, 2)


def test_an_empty_prompt_is_refused_with_its_line(tmp_path):
  """With no prompt token the first response token would be predicted from a padding position."""
  path = write(tmp_path / "p.jsonl", ['{"prompt": "x", "chosen": "a", "rejected": "b"}',
                                      '{"prompt": "", "chosen": "a", "rejected": "b"}'])
  for kind in ("preferences", "prompts", "sft"):
    with pytest.raises(ValueError, match=r"p.jsonl:2: empty prompt$"):
      data.load_examples(path, kind)


def test_parquet_json_and_saved_datasets_read_like_jsonl(tmp_path, assets):
  """data.train as a .parquet file, a .json array, or a save_to_disk folder (a Dataset, or a DatasetDict's
  train split) gives the JSONL file's examples and token arrays; conversational rows too."""
  datasets = pytest.importorskip("datasets", reason="JSON / Parquet / saved datasets are the `data` extra")
  rows = [json.loads(line) for line in open(assets["train"])]
  (tmp_path / "pairs.json").write_text(json.dumps(rows))
  table = datasets.Dataset.from_list(rows)
  table.to_parquet(str(tmp_path / "pairs.parquet"))
  table.save_to_disk(str(tmp_path / "saved"))
  datasets.DatasetDict({"train": table}).save_to_disk(str(tmp_path / "saved_dict"))
  expected, counts = data.load_examples(assets["train"], "preferences")
  assert counts["lines"] == 64
  for name in ("pairs.json", "pairs.parquet", "saved", "saved_dict"):
    assert data.load_examples(str(tmp_path / name), "preferences")[0] == expected, name
  tokenizer = tok.load_tokenizer(assets["policy"])
  arrays = lambda path: data.tokenize_preferences(tokenizer, data.load_examples(path, "preferences")[0], 64, 64)
  for key, value in arrays(str(tmp_path / "pairs.parquet")).items():
    np.testing.assert_array_equal(value, arrays(assets["train"])[key], err_msg=key)
  assert C.require_file("data.train", str(tmp_path / "saved")) == str(tmp_path / "saved")
  chat = [{"prompt": [{"role": "user", "content": f"Review {subject}:"}],  # TRL's conversational format
           "chosen": [{"role": "assistant", "content": "good"}], "rejected": [{"role": "assistant", "content": "bad"}]}
          for subject in ("the film", "the song")]
  datasets.Dataset.from_list(chat).to_parquet(str(tmp_path / "chat.parquet"))
  examples, _ = data.load_examples(str(tmp_path / "chat.parquet"), "preferences")
  assert examples[1] == ((("user", "Review the song:"),), (("assistant", "good"),), (("assistant", "bad"),))


def test_unreadable_datasets_are_named_in_one_line(tmp_path):
  datasets = pytest.importorskip("datasets", reason="JSON / Parquet / saved datasets are the `data` extra")
  (tmp_path / "bad.parquet").write_bytes(b"not parquet")
  with pytest.raises(ValueError, match=r"bad.parquet: not readable as a dataset \("):
    data.load_examples(str(tmp_path / "bad.parquet"), "preferences")
  datasets.DatasetDict({"test": datasets.Dataset.from_list([{"prompt": "a"}])}).save_to_disk(str(tmp_path / "d"))
  with pytest.raises(ValueError, match=r"a DatasetDict without a 'train' split \(splits: \['test'\]\)"):
    data.load_examples(str(tmp_path / "d"), "prompts")
  with pytest.raises(ValueError, match="data.train: .*nothing: no such file"):
    C.require_file("data.train", str(tmp_path / "nothing"))
