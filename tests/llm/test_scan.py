"""Scanned layers (model.scan_layers: one stacked Block under lax.scan) against the list of Blocks: the same
logits for every family (Gemma 3's and Qwen2's mixed sliding and full layers included), the same gradients
with and without each remat policy, the same greedy decoding through the stacked KV cache, byte-identical
HF and PEFT exports, LoRA adapters stacked per layer; and a traced program that does not grow with depth."""

import dataclasses
import filecmp
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import make_padded_batch
from flax import nnx

from llm.inference import logprobs, sampling
from llm.models import config as model_config
from llm.models import hf_io, lora
from llm.models.transformer import init_model, layer_path

# conftest.hf_configs: every family and every per-layer feature (sliding windows in some layers or all, q/k
# norms, Gemma's four norms and two RoPE bases, GPT-2's biases); tied embeddings and Qwen2 without a window
# add nothing per layer
FAMILIES = ["gpt2", "llama", "mistral_window", "qwen2_window", "qwen3", "gemma2", "gemma3"]


@pytest.fixture(scope="module")
def pair(tiny_hf_configs, tmp_path_factory):
  """name -> (list-of-blocks model, scanned model loaded from its HF export, the export's folder)."""
  cache = {}

  def make(name, **overrides):
    if (name, *overrides.items()) not in cache:
      config = model_config.from_hf(tiny_hf_configs[name], **overrides)
      model = init_model(config, seed=3)
      folder = str(tmp_path_factory.mktemp(name) / "hf")
      hf_io.save_hf_checkpoint(model, folder)
      scanned, scanned_config = hf_io.load_hf_checkpoint(folder, scan_layers=True, **overrides)
      assert scanned_config == dataclasses.replace(model.config, scan_layers=True)
      cache[name, *overrides.items()] = model, scanned, folder
    return cache[name, *overrides.items()]

  return make


def per_layer(config, scanned_flat, path):
  """The value at the per-layer path `path` of a scanned model's flat state."""
  stored, layer = layer_path(config, path)
  value = scanned_flat[stored].get_value()
  return value if layer is None else value[layer]


@pytest.mark.parametrize("name", FAMILIES)
def test_scanned_layers_give_the_same_logits_and_export_the_same_checkpoint(name, pair, tmp_path):
  model, scanned, folder = pair(name)
  kernel = dict(nnx.to_flat_state(nnx.state(scanned, nnx.Param)))[("blocks", "o_proj" if name != "gpt2" else "c_proj",
                                                                   "kernel")]
  assert kernel.get_value().shape[0] == model.config.num_layers  # stacked, not a list
  assert kernel.get_metadata()["out_sharding"][0] == "layers"
  ids, mask, _ = make_padded_batch(np.random.default_rng(1))
  ids, mask = jnp.asarray(ids, jnp.int32), jnp.asarray(mask)
  np.testing.assert_allclose(scanned(ids, mask), model(ids, mask), atol=2e-6, rtol=0)
  hf_io.save_hf_checkpoint(scanned, str(tmp_path / "again"))
  assert filecmp.cmp(os.path.join(folder, hf_io.SINGLE_FILE), str(tmp_path / "again" / hf_io.SINGLE_FILE),
                     shallow=False)


def loss_and_grads(model, ids, mask):
  graphdef, state = nnx.split(model)
  loss = lambda state: logprobs.token_logprobs(nnx.merge(graphdef, state), ids, mask).sum()
  value, grads = jax.jit(jax.value_and_grad(loss))(state)
  return jax.make_jaxpr(loss)(state), value, dict(nnx.to_flat_state(grads))


@pytest.mark.parametrize("name", ["mistral_window", "gemma3"])
def test_scanned_gradients_equal_the_unscanned_ones_under_every_remat_policy(name, pair):
  """Gemma 3 mixes sliding and full layers with two RoPE bases, chosen per layer inside the scan."""
  model, scanned, folder = pair(name)
  ids = jnp.asarray(np.random.default_rng(6).integers(1, 97, (2, 9)), jnp.int32)
  mask = jnp.asarray([[1] * 9, [0, 0] + [1] * 7])
  _, expected_value, expected = loss_and_grads(model, ids, mask)
  for policy in (None, *model_config.REMAT_POLICIES):
    remat = {} if policy is None else {"remat": True, "remat_policy": policy}
    candidate = hf_io.load_hf_checkpoint(folder, scan_layers=True, **remat)[0] if remat else scanned
    jaxpr, value, grads = loss_and_grads(candidate, ids, mask)
    layer = [e for e in jaxpr.jaxpr.eqns if e.primitive.name == "scan"][0].params["jaxpr"].eqns
    policies = [e.params["policy"] for e in layer if "policy" in e.params]  # jax.checkpoint's equation
    assert policies == ([] if policy is None else [getattr(jax.checkpoint_policies, policy)])
    np.testing.assert_allclose(value, expected_value, rtol=1e-6)
    for path, grad in expected.items():
      np.testing.assert_allclose(per_layer(candidate.config, grads, path), grad.get_value(), atol=2e-6, rtol=1e-5,
                                 err_msg=f"{policy} {path}")


@pytest.mark.parametrize("name", ["gemma3", "llama"])
def test_scanned_decoding_through_the_stacked_cache_equals_the_unscanned(name, pair):
  model, scanned, _ = pair(name)
  ids, mask, _ = make_padded_batch(np.random.default_rng(3), length=6)
  mask[2] = 1  # left padding only, as prompts are
  outs = [sampling.generate(m, ids, mask, jax.random.key(0), max_new_tokens=8, temperature=0.0)
          for m in (model, scanned)]
  np.testing.assert_array_equal(outs[1].tokens, outs[0].tokens)
  np.testing.assert_allclose(outs[1].logprobs, outs[0].logprobs, atol=1e-5)


def test_scanned_lora_adapters_are_stacked_per_layer_and_export_the_same(pair, tmp_path):
  model, scanned, _ = pair("llama")
  model = nnx.clone(model)
  scanned = nnx.clone(scanned)
  for m in (model, scanned):
    lora.add_adapters(m, 4, 8.0, ("all-linear",), seed=1)
  assert lora.adapted(model).keys() == lora.adapted(scanned).keys()
  rng = np.random.default_rng(0)
  for name, (linear, _) in lora.adapted(model).items():  # distinct nonzero adapters in every layer
    stacked, layer = lora.adapted(scanned)[name]
    assert stacked.adapter.lora_a[...].shape == (model.config.num_layers, *linear.adapter.lora_a[...].shape)
    for param in ("lora_a", "lora_b"):
      value = rng.normal(size=getattr(linear.adapter, param)[...].shape).astype(np.float32) * 0.2
      getattr(linear.adapter, param)[...] = value
      target = getattr(stacked.adapter, param)
      target[...] = target[...].at[layer].set(value)
  ids, mask, _ = make_padded_batch(np.random.default_rng(2))
  ids, mask = jnp.asarray(ids, jnp.int32), jnp.asarray(mask)
  np.testing.assert_allclose(scanned(ids, mask), model(ids, mask), atol=2e-6, rtol=0)
  assert np.abs(np.asarray(model(ids, mask)) - np.asarray(lora.without_adapters(model)(ids, mask))).max() > 0.05
  for m, out in ((model, "plain"), (scanned, "scanned")):
    hf_io.save_peft_adapter(m, str(tmp_path / out / "adapter"), alpha=8.0, targets=("all-linear",))
    hf_io.save_hf_checkpoint(m, str(tmp_path / out / "merged"))
  for file in ("adapter/adapter_model.safetensors", f"merged/{hf_io.SINGLE_FILE}"):
    assert filecmp.cmp(tmp_path / "plain" / file, tmp_path / "scanned" / file, shallow=False), file


def test_the_scanned_program_does_not_grow_with_depth(tiny_hf_configs):
  """The traced loss and gradient: one layer's equations whatever the depth when scanned; a list of
  blocks traces every layer."""
  ids = jnp.ones((2, 8), jnp.int32)

  def size(layers, scan):
    config = model_config.from_hf(tiny_hf_configs["llama"], num_layers=layers, scan_layers=scan, remat=True)
    graphdef, state = nnx.split(nnx.eval_shape(lambda: init_model(config)))
    loss = lambda state: logprobs.token_logprobs(nnx.merge(graphdef, state), ids, None).sum()
    return len(str(jax.make_jaxpr(jax.grad(loss))(state)).splitlines())

  assert size(2, True) == size(8, True)
  assert size(8, False) - size(2, False) > 6 * 100  # over 100 lines per unrolled layer


def test_remat_policy_is_checked():
  with pytest.raises(ValueError, match="remat_policy must be one of"):
    model_config.ModelConfig(model_type="llama", vocab_size=8, hidden_size=8, num_layers=1, num_heads=1,
                             num_kv_heads=1, head_dim=8, intermediate_size=8, max_position_embeddings=8,
                             norm_eps=1e-6, remat_policy="dots")


def test_a_scanned_sft_run_trains_the_same_model_and_its_checkpoint_keeps_its_layout(assets, tmp_path):
  """The trainer end to end (load, sharded step with remat, orbax checkpoints, export): scanned and unscanned
  runs export the same weights; a checkpoint of one layout is refused, in one line, by a run of the other."""
  from safetensors.numpy import load_file
  from test_trainers import run

  from llm.training import checkpoint
  settings = {"train.max_steps": 3, "train.learning_rate": 3e-3, "train.warmup_ratio": 0, "model.remat": "true"}
  outs = {scan: tmp_path / f"scan_{scan}" for scan in (False, True)}
  for scan, out in outs.items():
    run("sft", assets, out, **settings, **{"model.scan_layers": str(scan).lower()})
  trained = [load_file(outs[scan] / "model" / hf_io.SINGLE_FILE) for scan in (False, True)]
  initial = load_file(os.path.join(assets["policy"], hf_io.SINGLE_FILE))
  for name, value in trained[0].items():
    np.testing.assert_allclose(trained[1][name], value, atol=1e-5, err_msg=name)
  assert max(np.abs(trained[0][n] - initial[n]).max() for n in initial) > 1e-3  # the runs moved the weights
  unscanned = checkpoint.TrainState(nnx.state(hf_io.load_hf_checkpoint(assets["policy"])[0], nnx.Param), {}, 0,
                                    jax.random.key(0), 0)
  with pytest.raises(ValueError, match="holds another parameter layout than this run's model"):
    checkpoint.restore(checkpoint.manager(str(outs[True] / "checkpoints")), unscanned)
