"""LoRA (llm.models.lora): the exported PEFT adapter folder loads with peft onto the transformers model to the
same outputs, the merged export equals it, a LoRA DPO run trains the adapters only against the base model
as its reference, resumes to the same adapters, and a run on an 8-device mesh equals one on one device."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tiny
from flax import nnx
from safetensors.numpy import load_file
from test_trainers import cli_process, metrics, run

from llm.inference import tokenizer as tok
from llm.models import hf_io, lora
from llm.training import config as C
from llm.training import data, trainers
from llm.training.loop import train

LORA = {"model.lora_rank": 4, "model.lora_alpha": 8.0, "model.lora_targets": "q_proj,v_proj,down_proj",
        "train.max_steps": 4, "train.learning_rate": 1e-2, "train.log_every": 1, "train.warmup_ratio": 0}


@pytest.mark.parametrize("name, head, targets, rslora", [
    ("llama", "causal", (), False),  # PEFT's default targets for llama: q_proj, v_proj
    ("gpt2", "causal", ("c_attn", "c_proj"), False),  # Conv1D (fan_in_fan_out); c_proj matches attn and mlp
    ("qwen3", "sequence", ("all-linear",), True),  # a score head (modules_to_save) and rsLoRA's scale
])
def test_peft_loads_the_exported_adapter_to_the_same_outputs(hf_folder, tmp_path, name, head, targets, rslora):
  import peft
  import torch
  import transformers
  torch_model, folder = hf_folder(name, head)
  model, _ = hf_io.load_hf_checkpoint(folder)
  lora.add_adapters(model, 4, 8.0, targets, rslora=rslora, seed=1)
  counts = {"llama": 2 * 2, "gpt2": 3 * 2, "qwen3": 7 * 2}[name]  # adapted projections: per layer x 2 layers
  assert len(lora.adapted(model)) == counts
  ids = np.random.default_rng(0).integers(1, torch_model.config.vocab_size, (2, 7))
  mask = np.ones_like(ids)
  mask[1, :2] = 0
  base = np.asarray(model(jnp.asarray(ids), jnp.asarray(mask)))
  adapters = nnx.state(model, nnx.LoRAParam)  # B is zero: an adapted model starts equal to its base
  nnx.update(model, jax.tree.map(lambda x: x + 0.3 * jax.random.normal(jax.random.key(3), x.shape), adapters))
  ours = np.asarray(model(jnp.asarray(ids), jnp.asarray(mask)))
  np.testing.assert_allclose(np.asarray(lora.without_adapters(model)(jnp.asarray(ids), jnp.asarray(mask))), base,
                             atol=1e-6)
  assert np.abs(ours - base).max() > 0.05  # the adapters move the outputs well past the tolerance
  hf_io.save_peft_adapter(model, str(tmp_path / "adapter"), alpha=8.0, targets=targets, rslora=rslora,
                          base_model=folder)
  hf_io.save_hf_checkpoint(model, str(tmp_path / "merged"))
  cls = transformers.AutoModelForCausalLM if head == "causal" else transformers.AutoModelForSequenceClassification
  with torch.no_grad():
    positions = np.maximum(np.cumsum(mask, -1) - 1, 0)  # as ours count them (GPT-2's HF default does not)
    feed = dict(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask), position_ids=torch.tensor(positions))
    with_peft = peft.PeftModel.from_pretrained(cls.from_pretrained(folder), str(tmp_path / "adapter")).eval()
    merged = cls.from_pretrained(str(tmp_path / "merged")).eval()
    for other in (with_peft, merged):
      logits = other(**feed).logits.numpy()
      if head == "causal":
        logits, reference = logits[mask == 1], ours[mask == 1]
      else:
        reference = ours
      np.testing.assert_allclose(logits, reference, atol=2e-5)
  config = json.load(open(tmp_path / "adapter" / "adapter_config.json"))
  assert (config["r"], config["lora_alpha"], config["use_rslora"], config["fan_in_fan_out"]) == (4, 8.0, rslora,
                                                                                                 name == "gpt2")


@pytest.fixture(scope="module")
def lora_dpo(assets, tmp_path_factory):
  out = tmp_path_factory.mktemp("lora_dpo")
  return str(out), run("dpo", assets, out, **LORA)


def test_lora_dpo_trains_the_adapters_only_against_the_base(assets, lora_dpo):
  out, summary = lora_dpo
  rows = [row for row in metrics(out) if "train/loss" in row]  # (the last line is the final evaluation)
  np.testing.assert_allclose(rows[0]["train/loss"], np.log(2), rtol=1e-5)  # step 1: the policy is the reference
  # then DPO moves the adapters the right way (4 steps: the loss 0.693 -> 0.681, the margin 0 -> 0.026)
  assert rows[-1]["train/loss"] < np.log(2) - 0.005 and summary["metrics"]["train/rewards/margins"] > 0.01
  # The reference is the base model (adapters off): its cached log-probs are the base policy's.
  tokenizer = tok.load_tokenizer(assets["policy"])
  config = C.load_config("dpo", None, tiny.overrides(assets, out, **LORA))
  arrays, _ = trainers.preference_arrays(config, tokenizer, assets["train"])
  base, _ = hf_io.load_hf_checkpoint(assets["policy"])
  batch = {k: jnp.asarray(v[:8]) for k, v in arrays.items()}
  cached = np.load(os.path.join(out, "reference_logprobs_train.npz"))
  np.testing.assert_allclose(cached["ref_chosen"][:8], trainers.policy_logprobs(base, batch)[0], rtol=1e-5)
  # Only the targeted projections changed; the merged export is base + (alpha / r) B A of the PEFT folder.
  start, merged = load_file(os.path.join(assets["policy"], "model.safetensors")), load_file(
      os.path.join(out, "model", "model.safetensors"))
  adapter = load_file(os.path.join(out, "adapter", "adapter_model.safetensors"))
  changed = {name for name in start if not np.array_equal(start[name], merged[name])}
  targets = ("q_proj", "v_proj", "down_proj")
  assert changed == {n for n in start if n.endswith(tuple(f"{t}.weight" for t in targets))}
  for name in changed:
    module = "base_model.model." + name.removesuffix(".weight")
    delta = adapter[module + ".lora_B.weight"] @ adapter[module + ".lora_A.weight"]
    np.testing.assert_allclose(merged[name], start[name] + 2.0 * delta, atol=1e-6, err_msg=name)
  assert os.path.isfile(os.path.join(out, "adapter", "adapter_config.json"))


def test_lora_keeps_optimizer_state_for_the_adapters_only_and_resumes(assets, tmp_path):
  """train() with adapters: the checkpoint holds the adapters and their AdamW moments only, and a run
  stopped after its step-2 checkpoint resumes to the adapters of an uninterrupted run."""
  tokenizer = tok.load_tokenizer(assets["policy"])
  examples, _ = data.load_examples(assets["train"], "sft")
  arrays = data.tokenize_sft(tokenizer, examples, 64, 64)
  config = C.load_config("sft", None, ["train.batch_size=8", "train.max_steps=4", "train.save_every=2",
                                       "train.learning_rate=1e-2", "train.progress=false",
                                       "train.tensorboard=false"]).train

  def adapted_model():
    model, _ = hf_io.load_hf_checkpoint(assets["policy"])
    return lora.add_adapters(model, 4, 8.0, seed=0)

  whole = adapted_model()
  train(whole, trainers.sft_loss, arrays, config, str(tmp_path / "whole"))

  def stop(step, steps, params):
    if step == 2:
      raise KeyboardInterrupt

  with pytest.raises(KeyboardInterrupt):
    train(adapted_model(), trainers.sft_loss, arrays, config, str(tmp_path / "killed"), on_step=stop)
  resumed = adapted_model()
  train(resumed, trainers.sft_loss, arrays, config, str(tmp_path / "killed"))
  for a, b in zip(jax.tree.leaves(nnx.state(whole, nnx.LoRAParam)), jax.tree.leaves(nnx.state(resumed, nnx.LoRAParam))):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  import orbax.checkpoint as ocp

  from llm.training import checkpoint
  saved = checkpoint.manager(str(tmp_path / "whole" / "checkpoints")).restore(  # as stored, no target
      4, args=ocp.args.Composite(arrays=ocp.args.StandardRestore()))["arrays"]
  sizes = lambda tree: sum(int(np.size(x)) for x in jax.tree.leaves(tree))
  adapter_size = sizes(nnx.state(whole, nnx.LoRAParam))
  assert sizes(saved["params"]) == adapter_size
  assert adapter_size * 2 <= sizes(saved["opt_state"]) <= adapter_size * 2 + 4  # mu, nu (+ counts)
  assert adapter_size * 20 < sizes(nnx.state(whole, nnx.Param))  # the frozen base is far larger


@pytest.mark.slow  # a CLI run in a subprocess (~26 s); the suite's budget
def test_lora_dpo_on_an_8_device_mesh_equals_one_device(assets, lora_dpo, tmp_path):
  out = tmp_path / "mesh"
  p = cli_process(["dpo", *tiny.overrides(assets, out, **LORA), "train.mesh={data: 2, fsdp: 2, tensor: 2}"],
                  env_extra={"XLA_FLAGS": "--xla_force_host_platform_device_count=8"})
  output = p.communicate(timeout=300)[0]
  assert p.returncode == 0, output
  one = load_file(os.path.join(lora_dpo[0], "adapter", "adapter_model.safetensors"))
  eight = load_file(os.path.join(out, "adapter", "adapter_model.safetensors"))
  for name in one:
    np.testing.assert_allclose(eight[name], one[name], rtol=1e-4, atol=1e-5, err_msg=name)
  assert any(np.abs(v).max() > 0 for k, v in one.items() if "lora_B" in k)  # B trained away from zero


@pytest.mark.parametrize("overrides, message", [
    (["model.lora_rank=4", "model.lora_targets=q_proj,qkv"],
     r"model.lora_targets: 'qkv' matches no projection of llama \(its projections: \['down_proj', 'gate_proj', "),
    (["model.lora_rank=-1"], "model.lora_rank must be >= 0, got -1"),
    (["model.lora_alpha=0"], "model.lora_alpha must be > 0, got 0.0"),
])
def test_bad_lora_settings_are_named_in_one_line(assets, tmp_path, overrides, message):
  with pytest.raises(ValueError, match=message):
    run("dpo", assets, tmp_path, **dict(o.split("=", 1) for o in overrides))


def test_a_bfloat16_base_is_refused_for_full_training_and_accepted_under_lora():
  with pytest.raises(ValueError, match="model.param_dtype=bfloat16 has no float32 master copy"):
    C.load_config("dpo", None, ["model.param_dtype=bfloat16"])
  assert C.load_config("dpo", None, ["model.param_dtype=bfloat16", "model.lora_rank=8"]).model.lora_rank == 8
  with pytest.raises(ValueError, match="no float32 master copy"):  # a reward model trains its new head
    C.load_config("reward", None, ["model.param_dtype=bfloat16", "model.lora_rank=8"])
