"""Ahead-of-time compilation for TPU slices (llm.training.aot) through libtpu's compile-only devices: the
report's arithmetic on hand-computed cases, and real compiles of a small model's SFT and DPO steps for
v5e:2x2 (fsdp x tensor) and v5p:2x2x2 (data x fsdp x tensor) whose memory figures are checked against the
arrays' own sizes."""

import json
import math
import types

import jax
import pytest

from llm import cli
from llm.models.config import ModelConfig
from llm.parallel import topology
from llm.training import aot
from llm.training.config import load_config

pytest.importorskip("libtpu", reason="TPU compilation needs libtpu (the tpu-compile extra; the test extra pins it)")

# Sizes that TPU tiles hold without padding: minor dimensions of every shard a multiple of 128.
HF_CONFIG = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 256, "intermediate_size": 512,
             "num_hidden_layers": 2, "num_attention_heads": 2, "num_key_value_heads": 2, "head_dim": 128,
             "vocab_size": 512, "max_position_embeddings": 512, "rms_norm_eps": 1e-6, "hidden_act": "silu",
             "bos_token_id": 1, "eos_token_id": 2}


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory):
  folder = tmp_path_factory.mktemp("llama_config")  # config.json only: compiling needs no weights
  (folder / "config.json").write_text(json.dumps(HF_CONFIG))
  return str(folder)


def settings(folder, mesh, **more):
  return [f"model.path={folder}", "model.compute_dtype=bfloat16", "model.remat=true", "data.max_prompt_length=64",
          "data.max_response_length=64", "train.batch_size=4", f"train.mesh={json.dumps(mesh)}",
          *[f"{k}={v}" for k, v in more.items()]]


def test_model_flops_and_roofline_by_hand():
  config = ModelConfig(model_type="llama", vocab_size=10, hidden_size=4, num_layers=3, num_heads=2, num_kv_heads=1,
                       head_dim=2, intermediate_size=8, max_position_embeddings=16, norm_eps=1e-6)
  # per layer: q 4*2*2 + k, v 4*2*1 each + o 2*2*4 + MLP 3*4*8 = 16 + 16 + 16 + 96 = 144; LM head 4*10 = 40
  assert aot.layer_matmul_params(config) == 144
  total, forward = aot.model_flops(config, sequences=5, length=7)  # 35 tokens
  attention = 12 * 3 * 2 * 2 * 7 * 35  # 12 L H d_head T per token
  assert total == 6 * (3 * 144 + 40) * 35 + attention == 134_400
  assert forward == 2 * 3 * 144 * 35 + attention / 3 == 42_000
  chip = topology.Chip(hbm_bytes=1e3, peak_flops=100.0, hbm_bandwidth=10.0, cores=1)
  assert aot.roofline(1000.0, 50.0, chip) == 10.0  # compute bound: 1000 / 100 > 50 / 10
  assert aot.roofline(1000.0, 500.0, chip) == 50.0  # memory bound


def test_a_v4_device_is_half_a_chip_and_unknown_kinds_are_refused():
  v4 = topology.device_spec(types.SimpleNamespace(device_kind="TPU v4", num_cores=1))  # one TensorCore per device
  assert v4.hbm_bytes == 16 * topology.GIB and v4.peak_flops == 137.5e12
  assert topology.device_spec(types.SimpleNamespace(device_kind="TPU v5", num_cores=2)) == topology.CHIPS["TPU v5"]
  with pytest.raises(ValueError, match="no published figures for 'TPU v9'"):
    topology.device_spec(types.SimpleNamespace(device_kind="TPU v9", num_cores=1))


def test_bad_topologies_and_commands_get_one_line(model_folder, capsys):
  with pytest.raises(ValueError, match=r"--compile v5e:3x3: not a TPU slice libtpu knows"):
    topology.compile_only_devices("v5e:3x3")
  assert cli.main(["label", "--compile", "v5e:2x2", f"model.path={model_folder}"]) == 2
  assert "the command must be one of sft, reward, dpo, sample, got label" in capsys.readouterr().err
  assert cli.main(["dpo", "--compile", "v6e:4x4", *settings(model_folder, {"fsdp": 8, "tensor": 2})]) == 2
  assert "does not map onto the slice's physical axes" in capsys.readouterr().err  # 8 is not a product of 4 x 4
  # 4 rows per micro-batch cannot split over 32 data-parallel chips
  assert cli.main(["dpo", "--compile", "v5e:4x8", *settings(model_folder, {"data": -1})]) == 2
  assert "4 rows per micro-batch do not divide over the 32 devices" in capsys.readouterr().err


def check_memory_and_flops(result, mesh):
  """Per chip, the compiled step's arguments are the shards of params, AdamW moments and batch; the donated
  params and moments are aliased to the outputs (no second copy); XLA's flops lie between the model's and
  the model's with remat's forward pass again; the roofline is the slower of compute and least traffic."""
  assert result["chips"] == math.prod(mesh.values()) and result["mesh"] == {"data": 1, **mesh}
  b = result["bytes_per_chip"]
  n = result["parameters"]
  norms = 256 * 5  # replicated; every other parameter is split over fsdp x tensor
  assert b["parameters"] == 4 * ((n - norms) / (mesh["fsdp"] * mesh["tensor"]) + norms)
  assert b["optimizer_state"] == pytest.approx(2 * b["parameters"], abs=64)  # mu and nu (and step counts)
  assert b["arguments"] == pytest.approx(b["parameters"] + b["optimizer_state"] + b["batch"], rel=0.01)
  assert b["aliased"] == pytest.approx(b["parameters"] + b["optimizer_state"], rel=0.01)
  assert b["total"] >= b["arguments"] + b["outputs"] - b["aliased"] + b["temporaries"]  # XLA's peak, at least
  flops = result["flops_per_step"]
  if not flops["xla_counts_one_layer"]:  # (scanned layers: XLA counts one)
    assert flops["model"] < flops["xla_per_chip_x_chips"] < 1.25 * flops["with_remat"]  # per step, all chips
  least = result["bytes_accessed_per_chip"]["at_least"]
  assert least == b["arguments"] + b["outputs"] + 2 * b["temporaries"]
  chip = topology.CHIPS[result["device_kind"]]
  assert result["roofline"]["step_seconds"] == max(flops["with_remat"] / result["chips"] / chip.peak_flops,
                                                   least / chip.hbm_bandwidth)


@pytest.mark.parametrize("command,topology_name,mesh", [("dpo", "v5e:2x2", {"fsdp": 2, "tensor": 2}),
                                                       ("sft", "v5e:2x2", {"fsdp": 2, "tensor": 2}),
                                                       ("dpo", "v5p:2x2x2", {"data": 2, "fsdp": 2, "tensor": 2})])
def test_the_cli_compiles_the_step_for_a_slice(command, topology_name, mesh, model_folder, capsys):
  assert cli.main([command, "--compile", topology_name, *settings(model_folder, mesh)]) == 0
  text = capsys.readouterr().out
  result = json.loads(text[text.index("\n{") + 1:])
  sequences = 8 if command == "dpo" else 4  # 4 pairs score both responses; 4 SFT examples
  assert result["fits"] and result["trainer"] == command and result["batch"]["sequences_per_step"] == sequences
  assert "fits" in text.splitlines()[1] and "MFU at most" in text
  check_memory_and_flops(result, mesh)
  assert jax.devices()[0].platform == "cpu"  # nothing ran on (or initialized) a TPU backend


def test_scanned_layers_compile_to_the_same_shards_and_count_one_layer(model_folder, capsys):
  """model.scan_layers: the stacked parameters shard as the unscanned ones (the same bytes per chip) and
  XLA's flop count holds one of the two layers (the report says so)."""
  mesh = {"fsdp": 2, "tensor": 2}
  results = {}
  for scan in ("false", "true"):
    assert cli.main(["dpo", "--compile", "v5e:2x2", *settings(model_folder, mesh, **{"model.scan_layers": scan})]) == 0
    text = capsys.readouterr().out
    results[scan] = result = json.loads(text[text.index("\n{") + 1:])
    assert result["fits"] and result["flops_per_step"]["xla_counts_one_layer"] == (scan == "true")
    assert ("(one layer counted)" in text) == (scan == "true")
    check_memory_and_flops(result, mesh)
  unscanned, scanned = results["false"], results["true"]
  for key in ("parameters", "optimizer_state", "batch"):
    assert scanned["bytes_per_chip"][key] == pytest.approx(unscanned["bytes_per_chip"][key], abs=64), key
  assert scanned["flops_per_step"]["model"] == unscanned["flops_per_step"]["model"]
  assert scanned["flops_per_step"]["xla_per_chip_x_chips"] < unscanned["flops_per_step"]["xla_per_chip_x_chips"]


def test_the_splash_kernel_compiles_inside_shard_map_for_a_slice(model_folder, capsys):
  """model.attention=splash: the Pallas kernel lowers to Mosaic for TPU, once per device's shard (rows over
  fsdp, heads over tensor), in the DPO step of a scanned model on v5e:2x2; the same memory figures."""
  mesh = {"fsdp": 2, "tensor": 2}
  more = {"model.attention": "splash", "model.scan_layers": "true"}
  config = load_config("dpo", None, settings(model_folder, mesh, **more))
  lowered, _ = aot.lower_train_step(config, "dpo", topology.compile_only_devices("v5e:2x2"))
  assert "tpu_custom_call" in lowered.as_text()  # the Mosaic kernel, not an XLA fallback
  assert cli.main(["dpo", "--compile", "v5e:2x2", *settings(model_folder, mesh, **more)]) == 0
  text = capsys.readouterr().out
  result = json.loads(text[text.index("\n{") + 1:])
  assert result["fits"]
  check_memory_and_flops(result, mesh)


def test_the_sampler_compiles_for_one_chip_and_holds_its_kv_cache(model_folder, capsys):
  """`sample --compile`: the prefill + decode loop for one v5e chip; its parameters are the arrays' own
  bytes, the compiled program's peak holds at least the parameters and the KV cache computed by hand (TPU's
  temp_size_in_bytes leaves the loop-carried cache out), and a decoding step at 16 rows is memory-bound (it
  reads every parameter and the cache)."""
  args = [f"model.path={model_folder}", "model.param_dtype=bfloat16", "sample.batch_size=8", "sample.num_samples=2",
          "sample.max_new_tokens=64", "data.max_prompt_length=60"]
  assert cli.main(["sample", "--compile", "v5e:2x2", *args]) == 0
  text = capsys.readouterr().out
  result = json.loads(text[text.index("\n{") + 1:])
  b, r = result["bytes_per_chip"], result["roofline"]
  assert result["batch"] == {"rows": 16, "prompt_tokens": 64, "new_tokens": 64}  # 60 padded to a multiple of 16
  assert b["parameters"] == 2 * result["parameters"]  # bfloat16, whole on the chip
  assert b["kv_cache"] == 2 * 2 * 16 * (64 + 64) * 2 * 128 * 2  # k and v, 2 layers, 16 rows, 128 slots, bf16
  assert b["total"] >= b["parameters"] + b["kv_cache"] and result["fits"]  # XLA's peak holds the cache
  chip = topology.CHIPS["TPU v5 lite"]
  assert r["decode_memory_bound"] and r["decode_step_seconds"] == (b["parameters"] + b["kv_cache"]) / chip.hbm_bandwidth
  assert r["decode_tokens_per_second"] == 16 / r["decode_step_seconds"]
  assert "sample on one chip of v5e:2x2" in text and "memory bound" in text
  # a sampler the compiler refuses (libtpu's message) is reported as not fitting, with the knobs
  _, parts = aot.lower_sampler(load_config("sample", None, args), topology.compile_only_devices("v5e:2x2")[0])
  error = RuntimeError("RESOURCE_EXHAUSTED: Ran out of memory on HBM, the total memory required for HLO temporaries "
                       "(45.40G) exceeds available HBM (15.75G).")
  refused = aot.sampler_report(None, parts, chip, refusal=aot.compiler_refusal(error))
  assert not refused["fits"] and refused["bytes_per_chip"]["kv_cache"] == b["kv_cache"]
  assert refused["advice"] == ("does not fit: the compiler needs 45.4 G per chip for temporaries alone, of 15.8 G; "
                               "try a smaller sample.batch_size or sample.num_samples (KV cache: 0.0 GiB)")
  assert aot.format_report({"topology": "v5e:2x2", "device_kind": "TPU v5 lite", **refused}).endswith(refused["advice"])


def test_sft_step_on_v5p_and_what_is_said_when_it_does_not_fit(model_folder, monkeypatch, capsys):
  """The SFT step on a 2x2x2 v5p slice with all three axes; the same compiled step against a chip of 1 MiB:
  the CLI exits 3 with one line giving the excess and the knobs (remat is already on, so not that one)."""
  mesh = {"data": 2, "fsdp": 2, "tensor": 2}
  config = load_config("sft", None, settings(model_folder, mesh))
  devices = topology.compile_only_devices("v5p:2x2x2")
  compiled, parts = aot.compile_train_step(config, "sft", devices)
  result = {"topology": "v5p:2x2x2", "device_kind": devices[0].device_kind,
            **aot.report(compiled, parts, config, "sft", topology.device_spec(devices[0]))}
  assert result["fits"] and result["device_kind"] == "TPU v5"
  check_memory_and_flops(result, mesh)
  tiny = topology.CHIPS["TPU v5"]._replace(hbm_bytes=2 ** 20)
  small = {**result, **aot.report(compiled, parts, config, "sft", tiny)}
  over = (small["bytes_per_chip"]["total"] - 2 ** 20) / topology.GIB
  assert not small["fits"] and small["advice"].startswith("does not fit: ")
  assert f"({over:.1f} GiB over); try a larger train.mesh fsdp axis" in small["advice"]
  assert "model.remat" not in small["advice"]
  monkeypatch.setattr(aot, "run_compile", lambda *args: small)
  assert cli.main(["sft", "--compile", "v5p:2x2x2", *settings(model_folder, mesh)]) == 3
  assert small["advice"] in capsys.readouterr().out.splitlines()


def test_a_step_the_compiler_refuses_for_want_of_hbm_is_reported_as_not_fitting(model_folder):
  """libtpu refuses to compile a step whose temporaries exceed the chip's HBM (RESOURCE_EXHAUSTED, the message
  below is libtpu 0.0.42.1's): the report says it does not fit, with the compiler's figures and the knobs."""
  config = load_config("dpo", None, settings(model_folder, {"fsdp": 4}, **{"model.remat": "false"}))
  _, parts = aot.lower_train_step(config, "dpo", topology.compile_only_devices("v5e:2x2"))
  error = RuntimeError("RESOURCE_EXHAUSTED: Ran out of memory on HBM, the total memory required for HLO temporaries "
                       "(175.48G) exceeds available HBM (95.74G).\nmore lines")
  result = aot.refused(error, parts, config, "dpo", topology.CHIPS["TPU v5 lite"])
  assert not result["fits"] and result["chips"] == 4 and result["compiler"].startswith("RESOURCE_EXHAUSTED")
  assert result["advice"].startswith("does not fit: the compiler needs 175.5 G per chip for temporaries alone, "
                                     "of 95.7 G; try a larger train.mesh fsdp axis")
  assert "temporaries, mostly activations: 175.5 GiB" in result["advice"] and "model.remat=true" in result["advice"]
  text = aot.format_report({"topology": "v5e:2x2", "device_kind": "TPU v5 lite", **result})
  assert text.splitlines()[-1] == result["advice"] and "the compiler: RESOURCE_EXHAUSTED" in text
