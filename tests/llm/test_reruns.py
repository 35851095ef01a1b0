"""Reruns never report a result under settings that did not make it (llm.training.manifest): a finished run
is reused only with the same settings and inputs, otherwise one line names the differences; --overwrite
makes it again; --resume continues an unfinished run under new settings; caches follow their inputs; a
torn metrics line, non-UTF-8 input, an emptied dataset and positions past GPT-2's end give one clear line."""

import json
import os
import shutil

import numpy as np
import pytest
import tiny
from safetensors.numpy import load_file

from llm import cli
from llm.training import config as C
from llm.training import data, loop, manifest, trainers

SETTINGS = {"train.max_steps": 4, "train.save_every": 2, "train.learning_rate": 1e-3}


def sft(assets, out, **extra):
  return trainers.run_sft(C.load_config("sft", None, tiny.overrides(assets, out, **{**SETTINGS, **extra})))


@pytest.fixture(scope="module")
def finished(assets, tmp_path_factory):
  out = tmp_path_factory.mktemp("finished")
  sft(assets, out)
  return str(out)


@pytest.fixture
def run_copy(finished, tmp_path):
  shutil.copytree(finished, tmp_path / "run")
  return str(tmp_path / "run")


@pytest.fixture
def trained(monkeypatch):
  """The output folders `train` ran in (empty when every run was reused)."""
  calls = []
  real = loop.train
  monkeypatch.setattr(trainers, "train", lambda *a, **k: calls.append(a[4]) or real(*a, **k))
  return calls


def test_a_finished_run_is_reused_only_with_the_same_settings_and_inputs(assets, run_copy, tmp_path, trained):
  os.makedirs(os.path.join(run_copy, ".tmp-k1ll3d"))  # a model export a killed run left behind
  open(os.path.join(run_copy, ".tmp-x9summary.json"), "w").close()
  summary = sft(assets, run_copy, **{"train.save_every": 3, "train.log_every": 1, "train.progress": "true"})
  assert summary["manifest"]["settings"]["train.learning_rate"] == 1e-3  # logging and cadence are not results
  assert not [name for name in os.listdir(run_copy) if name.startswith(".tmp-")]  # swept
  moved = shutil.copy(assets["train"], tmp_path / "moved.jsonl")
  sft(assets, run_copy, **{"data.train": moved})  # the same contents elsewhere
  assert trained == []
  with pytest.raises(ValueError, match=rf"output_dir {run_copy} was made with other settings or inputs "
                                       r"\(train.learning_rate: 0.001 -> 0.002\); rerun with --overwrite"):
    sft(assets, run_copy, **{"train.learning_rate": 2e-3})
  lines = open(assets["train"]).read().splitlines(keepends=True)
  changed = tmp_path / "changed.jsonl"
  changed.write_text("".join(lines[:-1]))
  with pytest.raises(ValueError, match=r"\(data.train: contents changed\)"):
    sft(assets, run_copy, **{"data.train": str(changed)})
  with pytest.raises(ValueError, match=r"^model.path: .*nope: no such folder \(nor a Hugging Face repo id in the local cache; nothing is downloaded\)$"):  # not the old summary, exit 0
    sft(assets, run_copy, **{"model.path": str(tmp_path / "nope")})
  policy = shutil.copytree(assets["policy"], tmp_path / "policy")
  config = json.load(open(policy / "config.json"))
  json.dump({**config, "rms_norm_eps": 1e-3}, open(policy / "config.json", "w"))
  with pytest.raises(ValueError, match=r"\(model.path: contents changed\)"):
    sft(assets, run_copy, **{"model.path": str(policy)})
  assert trained == []


def test_overwrite_makes_the_run_again_under_the_new_settings(assets, finished, run_copy, trained, capsys):
  assert cli.main(["sft", "--overwrite", *tiny.overrides(assets, run_copy, **{**SETTINGS,
                                                                               "train.learning_rate": 2e-3})]) == 0
  assert trained == [run_copy]
  summary = json.load(open(os.path.join(run_copy, "summary.json")))
  assert summary["config"]["train"]["learning_rate"] == summary["manifest"]["settings"]["train.learning_rate"] == 2e-3
  old, new = load_file(os.path.join(finished, "model", "model.safetensors")), load_file(
      os.path.join(run_copy, "model", "model.safetensors"))
  assert any(not np.array_equal(old[k], new[k]) for k in old)  # trained again from the start, not reused
  logged = [json.loads(line) for line in open(os.path.join(run_copy, "metrics.jsonl"))]
  assert [(m["step"], "eval/loss" in m) for m in logged] == [(4, False), (4, True)]  # this run's lines only


def test_resume_continues_an_unfinished_run_and_keeps_the_old_settings(assets, run_copy, trained, capsys):
  for name in ("summary.json", "model", os.path.join("checkpoints", "4")):  # killed between steps 2 and 4
    path = os.path.join(run_copy, name)
    shutil.rmtree(path) if os.path.isdir(path) else os.unlink(path)
  new = tiny.overrides(assets, run_copy, **{**SETTINGS, "train.learning_rate": 2e-3})
  assert cli.main(["sft", *new]) == 2
  err = capsys.readouterr().err.strip()
  assert "\n" not in err and err.endswith("or with --resume (on_change=resume) to continue it with the new settings")
  assert cli.main(["sft", "--resume", *new]) == 0
  assert trained == [run_copy]
  record = json.load(open(os.path.join(run_copy, "summary.json")))["manifest"]
  assert record["settings"]["train.learning_rate"] == 2e-3
  assert record["previous"]["settings"]["train.learning_rate"] == 1e-3
  with pytest.raises(ValueError, match=r"rerun with --overwrite \(on_change=overwrite\) to make it again$"):
    sft(assets, run_copy, on_change="resume")  # finished: nothing to resume under the old settings


def test_a_folder_without_a_manifest_is_not_taken_for_this_run(assets, run_copy):
  os.unlink(os.path.join(run_copy, "manifest.json"))
  with pytest.raises(ValueError, match=r"no manifest records how it was made"):
    sft(assets, run_copy)


def test_cache_keys_follow_contents_and_dtypes_not_paths(assets, tmp_path):
  arrays = {"prompt_ids": np.arange(6).reshape(2, 3)}
  section = C.load_config("dpo").model
  key = trainers.cache_key("x", arrays, [assets["policy"]], section)
  copy = shutil.copytree(assets["policy"], tmp_path / "copy")
  assert trainers.cache_key("x", arrays, [str(copy)], section) == key
  bf16 = C.load_config("dpo", None, ["model.compute_dtype=bfloat16"]).model
  assert trainers.cache_key("x", arrays, [str(copy)], bf16) != key
  weights = copy / "model.safetensors"
  weights.write_bytes(weights.read_bytes())  # the same bytes, a new modification time: the same key
  assert trainers.cache_key("x", arrays, [str(copy)], section) == key
  (copy / "config.json").write_text((copy / "config.json").read_text().replace('"rms_norm_eps"', '"rms_norm_eps" ', 1))
  assert trainers.cache_key("x", arrays, [str(copy)], section) != key
  assert trainers.cache_key("x", {"prompt_ids": arrays["prompt_ids"] + 1}, [assets["policy"]], section) != key


def test_large_files_are_fingerprinted_by_samples_that_see_every_region(tmp_path, monkeypatch):
  monkeypatch.setattr(manifest, "WHOLE_FILE_BYTES", 1 << 20)
  path = tmp_path / "weights.bin"
  blob = bytearray(np.random.default_rng(0).bytes(20 << 20))
  path.write_bytes(blob)
  before = manifest.file_fingerprint(str(path))
  middle = (len(blob) - manifest.CHUNK) * 7 // (manifest.SAMPLES - 1) + 12345  # inside the 8th sample
  for offset in (0, middle, len(blob) - 1):
    changed = bytearray(blob)
    changed[offset] ^= 1
    path.write_bytes(changed)
    assert manifest.file_fingerprint(str(path)) != before


def test_a_torn_metrics_line_is_dropped_on_resume_and_a_bad_one_named(tmp_path):
  path = tmp_path / "metrics.jsonl"
  path.write_text('{"step": 2, "train/loss": 1.0}\n{"step": 4, "train/loss": 0.5}\n{"step": 6, "train/lo')
  assert [json.loads(line)["step"] for line in loop.logged_lines(str(path), 4)] == [2, 4]
  path.write_text('{"step": 2, "train/loss": 1.0}\nGARBAGE\n{"step": 4, "train/loss": 0.5}\n')
  with pytest.raises(ValueError, match=rf"^{path}:2: not a metrics line"):
    loop.logged_lines(str(path), 4)


def test_non_utf8_input_names_file_and_line_and_can_be_skipped(tmp_path):
  path = tmp_path / "prefs.jsonl"
  path.write_bytes(b'{"prompt": "a", "chosen": "b", "rejected": "c"}\n{"prompt": "\xff\xfe", "chosen": "b"}\n')
  with pytest.raises(ValueError, match=rf"^{path}:2: malformed line \(.*utf-8"):
    data.read_jsonl(str(path))
  rows, skipped = data.read_jsonl(str(path), skip_malformed=True)
  assert [n for n, _ in rows] == [1] and skipped == 1


def test_an_emptied_dataset_and_positions_past_gpt2s_end_are_named(assets, hf_folder, tmp_path, capsys):
  overrides = tiny.overrides(assets, tmp_path / "empty", **{**SETTINGS, "data.max_prompt_length": 1})
  assert cli.main(["sft", *overrides]) == 2
  err = capsys.readouterr().err.strip()
  assert err.startswith(f"python -m llm sft: error: {assets['train']}: the filter left no example (") and "\n" not in err
  _, folder = hf_folder("gpt2")  # 64 positions
  long = tmp_path / "long.jsonl"
  long.write_text("".join(json.dumps({"prompt": "Review the film:", "response": " good" * 80}) + "\n"
                          for _ in range(8)))
  extra = {**SETTINGS, "model.path": folder, "model.tokenizer": assets["policy"], "data.train": str(long), "data.eval": "",
           "data.max_response_length": 100}
  assert cli.main(["sft", *tiny.overrides(assets, tmp_path / "gpt2", **extra)]) == 2
  assert "error: data.train: a prompt + response of" in capsys.readouterr().err


def test_outputs_that_cannot_be_written_are_named_before_any_work(assets, tmp_path, capsys):
  folder, a_file = tmp_path / "a_folder", tmp_path / "a_file"
  folder.mkdir()
  a_file.write_text("x")
  cases = [(["sample", f"model.path={assets['policy']}", f"sample.prompts={assets['prompts']}",
             f"sample.output={folder}"], f"sample.output: {folder} is a folder"),
           (["sft", *tiny.overrides(assets, a_file)], f"output_dir: {a_file} is not a folder"),
           (["label", f"label.input={assets['train']}", f"label.output={a_file}/x.jsonl"],
            f"label.output: {a_file} is not a folder")]
  for args, message in cases:
    assert cli.main(args) == 2
    assert capsys.readouterr().err == f"python -m llm {args[0]}: error: {message}\n"


def test_broken_checkpoint_files_are_named_in_one_line(assets, tmp_path, capsys):
  broken = shutil.copytree(assets["policy"], tmp_path / "broken")
  weights = broken / "model.safetensors"
  whole = weights.read_bytes()
  command = ["sample", f"model.path={broken}", f"sample.prompts={assets['prompts']}", f"output_dir={tmp_path / 'o'}"]
  for content in (b"", whole[:len(whole) // 2]):  # empty, truncated (a full disk, a killed copy)
    weights.write_bytes(content)
    assert cli.main(command) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"error: {weights}: not a readable safetensors file (" in err
  weights.write_bytes(whole)
  (broken / "config.json").write_text("{not json")
  assert cli.main(command) == 2
  err = capsys.readouterr().err
  assert err.count("\n") == 1 and "config.json" in err and "not a valid JSON" in err
