"""Models and HF interop against transformers' PyTorch models: logits with left and right padding for every
family, sequence-classification scores, export round trip (single file and sharded), greedy generation;
cached decoding against a full forward pass; chunked log-probs against a plain log-softmax; bad checkpoints."""

import json
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from llm.inference import logprobs, sampling
from llm.models import config as model_config
from llm.models import hf_io
from llm.models.transformer import init_model

FAMILIES = ["gpt2", "llama", "llama3_tied_bias", "mistral_window", "qwen2", "qwen2_window", "qwen3", "gemma2",
            "gemma3"]  # conftest.hf_configs


def torch_forward(model, ids, mask, positions):
  import torch
  with torch.no_grad():
    out = model(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask),
                position_ids=torch.tensor(positions))
  return out.logits.float().numpy()


@pytest.mark.parametrize("name", FAMILIES)
def test_logits_match_transformers_with_left_and_right_padding(name, hf_folder, tiny_hf_configs, padded_batch):
  torch_model, folder = hf_folder(name)
  model, config = hf_io.load_hf_checkpoint(folder)
  assert config.model_type == tiny_hf_configs[name].model_type
  ids, mask, positions = padded_batch(np.random.default_rng(0))
  expected = torch_forward(torch_model, ids, mask, positions)
  logits = np.asarray(model(jnp.asarray(ids, jnp.int32), jnp.asarray(mask)))
  real = mask.astype(bool)
  np.testing.assert_allclose(logits[real], expected[real], atol=1e-4, rtol=0)


@pytest.mark.parametrize("name", ["llama", "gemma3", "gpt2"])  # the head is shared: one per family
def test_sequence_classification_scores_match(name, hf_folder, padded_batch):
  torch_model, folder = hf_folder(name, "score")
  model, config = hf_io.load_hf_checkpoint(folder)
  assert config.num_labels == 1
  ids, mask, positions = padded_batch(np.random.default_rng(1))
  expected = torch_forward(torch_model, ids, mask, positions)  # reads the last non-pad token (pad id 0)
  scores = np.asarray(model(jnp.asarray(ids, jnp.int32), jnp.asarray(mask)))
  np.testing.assert_allclose(scores, expected, atol=1e-4, rtol=0)


@pytest.mark.parametrize("name,head,shard", [("llama3_tied_bias", "causal", None), ("qwen2", "causal", 20_000),
                                             ("gpt2", "causal", 20_000), ("llama", "score", None),
                                             ("qwen3", "causal", None), ("gemma2", "causal", None),
                                             ("gemma3", "score", None)])
def test_export_round_trip(name, head, shard, tmp_path, tiny_hf_configs, padded_batch):
  pytest.importorskip("torch")
  import transformers
  config = model_config.from_hf(tiny_hf_configs[name], num_labels=1 if head == "score" else None, pad_token_id=0)
  model = init_model(config, seed=3)
  out = str(tmp_path / "export")
  hf_io.save_hf_checkpoint(model, out, max_shard_bytes=shard)
  assert os.path.exists(os.path.join(out, hf_io.INDEX_FILE)) == (shard is not None)
  assert not [f for f in os.listdir(tmp_path) if f.startswith(".tmp")]
  cls = transformers.AutoModelForCausalLM if head == "causal" else transformers.AutoModelForSequenceClassification
  torch_model = cls.from_pretrained(out, attn_implementation="eager").eval()
  ids, mask, positions = padded_batch(np.random.default_rng(2))
  ours = np.asarray(model(jnp.asarray(ids, jnp.int32), jnp.asarray(mask)))
  theirs = torch_forward(torch_model, ids, mask, positions)
  real = mask.astype(bool) if head == "causal" else slice(None)
  np.testing.assert_allclose(ours[real], theirs[real], atol=1e-4, rtol=0)
  reloaded, _ = hf_io.load_hf_checkpoint(out)
  np.testing.assert_array_equal(np.asarray(reloaded(jnp.asarray(ids, jnp.int32), jnp.asarray(mask))), ours)


@pytest.mark.parametrize("name", ["llama", "gemma3", "gpt2"])
def test_greedy_generation_equals_transformers_generate(name, hf_folder):
  import torch
  torch_model, folder = hf_folder(name)
  model, _ = hf_io.load_hf_checkpoint(folder)
  rng = np.random.default_rng(3)
  ids = rng.integers(1, 97, (3, 6))
  mask = np.ones_like(ids)
  mask[1, :2] = 0
  mask[2, :4] = 0
  ids = np.where(mask == 1, ids, 0)
  ours = sampling.generate(model, ids, mask, jax.random.key(0), max_new_tokens=10, temperature=0.0)
  with torch.no_grad():
    theirs = torch_model.generate(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask), max_new_tokens=10,
                                  do_sample=False, pad_token_id=0, eos_token_id=None)
  np.testing.assert_array_equal(np.asarray(ours.tokens), theirs[:, ids.shape[1]:].numpy())


@pytest.fixture(scope="module")
def tiny_llama(tiny_hf_configs):
  config = model_config.from_hf(tiny_hf_configs["mistral_window"])
  return init_model(config, seed=1)


def test_cached_decoding_equals_a_full_forward_pass(tiny_llama):
  rng = np.random.default_rng(4)
  ids = rng.integers(1, 97, (2, 5))
  mask = np.ones_like(ids)
  mask[0, :2] = 0
  out = sampling.generate(tiny_llama, ids, mask, jax.random.key(1), max_new_tokens=12, temperature=1.0)
  # The sampler's per-token log-probs come from the cache; recompute them with one full forward pass.
  total, per_token = logprobs.sequence_logprobs(tiny_llama, jnp.asarray(ids), jnp.asarray(mask), out.tokens, out.mask)
  np.testing.assert_allclose(per_token, out.logprobs, atol=1e-5)
  np.testing.assert_allclose(total, out.logprobs.sum(-1), atol=1e-5)


def test_chunked_logprobs_equal_a_plain_log_softmax(tiny_llama):
  rng = np.random.default_rng(5)
  prompt = jnp.asarray(rng.integers(1, 97, (3, 4)), jnp.int32)
  prompt_mask = jnp.asarray([[1, 1, 1, 1], [0, 1, 1, 1], [0, 0, 1, 1]])
  response = jnp.asarray(rng.integers(1, 97, (3, 6)), jnp.int32)
  response_mask = jnp.asarray([[1] * 6, [1, 1, 1, 0, 0, 0], [1, 1, 0, 0, 0, 0]])
  ids = jnp.concatenate([prompt, response], 1)
  mask = jnp.concatenate([prompt_mask, response_mask], 1)
  logp = np.asarray(jax.nn.log_softmax(tiny_llama(ids, mask).astype(jnp.float32)))
  expected = np.array([sum(logp[b, 3 + t, int(response[b, t])] for t in range(6) if response_mask[b, t])
                       for b in range(3)])
  for chunk in (1, 3, 64):
    total, _ = logprobs.sequence_logprobs(tiny_llama, prompt, prompt_mask, response, response_mask, chunk=chunk)
    np.testing.assert_allclose(total, expected, rtol=1e-5)
  # Gradients through the rematerialized chunks equal those of the plain computation.
  def plain(m):
    lp = jax.nn.log_softmax(m(ids, mask).astype(jnp.float32))
    picked = jnp.take_along_axis(lp[:, 3:-1], response[:, :, None], axis=-1)[..., 0]
    return (picked * response_mask).sum()

  chunked = lambda m: logprobs.sequence_logprobs(m, prompt, prompt_mask, response, response_mask, chunk=3)[0].sum()
  graphdef, state = nnx.split(tiny_llama)
  grad = lambda f: jax.jit(jax.grad(lambda state: f(nnx.merge(graphdef, state))))(state)
  for a, b in zip(jax.tree.leaves(grad(chunked)), jax.tree.leaves(grad(plain))):
    np.testing.assert_allclose(a, b, atol=1e-6)


def test_rematerialized_blocks_give_the_same_loss_and_gradients(tiny_llama, tiny_hf_configs):
  remat = init_model(model_config.from_hf(tiny_hf_configs["mistral_window"], remat=True), seed=1)
  ids = jnp.asarray(np.random.default_rng(6).integers(1, 97, (2, 9)), jnp.int32)
  mask = jnp.asarray([[1] * 9, [0, 0] + [1] * 7])

  def loss_and_grads(model):
    graphdef, state = nnx.split(model)
    loss = lambda state: logprobs.token_logprobs(nnx.merge(graphdef, state), ids, mask).sum()
    return str(jax.make_jaxpr(loss)(state)), jax.jit(jax.value_and_grad(loss))(state)

  (jaxpr, (value, grads)), (plain_jaxpr, (plain_value, plain_grads)) = map(loss_and_grads, (remat, tiny_llama))
  assert "remat" in jaxpr and "remat" not in plain_jaxpr
  np.testing.assert_allclose(value, plain_value, rtol=1e-6)
  for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(plain_grads)):
    np.testing.assert_allclose(a, b, atol=1e-6)


def numpy_filter(logits, temperature, top_k, top_p):
  z = logits / temperature
  order = np.argsort(-z)
  keep = np.zeros_like(z, bool)
  keep[order[:top_k or len(z)]] = True
  probs = np.exp(z - z.max()) * keep
  probs /= probs.sum()
  mass = 0.0
  nucleus = np.zeros_like(keep)
  for i in order:
    if keep[i] and mass < top_p:
      nucleus[i] = True
      mass += probs[i]
  return np.where(nucleus, z, -np.inf)


@pytest.mark.parametrize("temperature,top_k,top_p", [(1.0, 0, 1.0), (0.7, 5, 1.0), (1.3, 0, 0.8), (1.0, 4, 0.5)])
def test_filter_logits_against_numpy(temperature, top_k, top_p):
  logits = np.random.default_rng(6).normal(size=(5, 20)).astype(np.float32)
  ours = np.asarray(sampling.filter_logits(jnp.asarray(logits), temperature=temperature, top_k=top_k, top_p=top_p))
  for row, got in zip(logits, ours):
    np.testing.assert_allclose(got, numpy_filter(row, temperature, top_k, top_p), rtol=1e-6)


def test_sampling_stops_and_draws_from_the_filtered_distribution(tiny_llama):
  ids = np.full((1, 3), 5)
  mask = np.ones_like(ids)
  logits = np.asarray(tiny_llama(jnp.asarray(ids, jnp.int32), jnp.asarray(mask)))[0, -1]
  for top_k, top_p, temperature in ((3, 1.0, 1.0), (0, 0.3, 0.5)):  # top-k, then a nucleus at a low temperature
    out = sampling.generate(tiny_llama, ids, mask, jax.random.key(2), max_new_tokens=1, temperature=temperature,
                            top_k=top_k, top_p=top_p, num_samples=3000)
    target = np.exp(numpy_filter(logits, temperature, top_k, top_p))
    target /= target.sum()
    assert 1 < np.count_nonzero(target) < 0.5 * len(target)  # a real truncation, more than one token kept
    freq = np.bincount(np.asarray(out.tokens[:, 0]), minlength=len(target)) / 3000
    assert freq[target == 0].sum() == 0  # nothing outside the kept set is ever drawn
    np.testing.assert_allclose(freq, target, atol=0.04)
  stop = int(np.argmax(target))
  out = sampling.generate(tiny_llama, ids, mask, jax.random.key(3), max_new_tokens=6, temperature=1.0, top_k=3,
                          stop_tokens=(stop,), num_samples=50, pad_id=0)
  tokens, m = np.asarray(out.tokens), np.asarray(out.mask)
  for row, row_mask in zip(tokens, m):
    hits = np.flatnonzero(row == stop)
    if hits.size:
      assert row_mask[:hits[0] + 1].all() and not row_mask[hits[0] + 1:].any()
      assert np.all(row[hits[0] + 1:] == 0)
  assert (m.sum(1) < 6).any()
  stopped = np.asarray(out.stopped)
  np.testing.assert_array_equal(stopped, (tokens == stop).any(1))  # False: cut at max_new_tokens
  assert stopped.any() and not stopped.all()


def test_stop_ids_are_the_tokenizers_eos_and_every_eos_of_config_and_generation_config(tiny_llama, tmp_path):
  from types import SimpleNamespace

  import transformers
  folder = str(tmp_path / "chat")
  hf_io.save_hf_checkpoint(tiny_llama, folder)
  transformers.GenerationConfig(eos_token_id=[5, 11]).save_pretrained(folder)  # e.g. Llama-3's eot_id, end_of_text
  model, config = hf_io.load_hf_checkpoint(folder)
  assert config.generation_eos_token_ids == (5, 11)
  assert sampling.stop_ids(model, SimpleNamespace(eos_token_id=7)) == tuple(sorted({5, 7, 11, config.eos_token_id}))
  hf_io.save_hf_checkpoint(model, str(tmp_path / "again"))  # the export keeps them for transformers' generate
  assert transformers.GenerationConfig.from_pretrained(str(tmp_path / "again")).eos_token_id == [5, 11]
  model = SimpleNamespace(config=SimpleNamespace(eos_token_id=None, generation_eos_token_ids=()))
  assert sampling.stop_ids(model, SimpleNamespace(eos_token_id=7)) == (7,)


def test_bad_prompts_and_checkpoints(tiny_llama, tmp_path):
  with pytest.raises(ValueError, match="left padding"):
    sampling.generate(tiny_llama, np.ones((1, 3)), np.array([[1, 1, 0]]), jax.random.key(0), max_new_tokens=2)
  with pytest.raises(ValueError, match="config.json"):
    hf_io.load_hf_checkpoint(str(tmp_path))
  folder = tmp_path / "bert"
  folder.mkdir()
  (folder / "config.json").write_text(json.dumps({"model_type": "bert", "architectures": ["BertModel"]}))
  with pytest.raises(ValueError, match="bert"):
    hf_io.load_hf_checkpoint(str(folder))
  good = tmp_path / "good"
  hf_io.save_hf_checkpoint(tiny_llama, str(good))
  pickled = tmp_path / "pickled"
  shutil.copytree(good, pickled)
  os.remove(pickled / "model.safetensors")
  (pickled / "pytorch_model.bin").write_bytes(b"")
  with pytest.raises(ValueError, match="never pickle"):
    hf_io.load_hf_checkpoint(str(pickled))
  from safetensors.numpy import load_file, save_file
  tensors = load_file(good / "model.safetensors")
  broken = tmp_path / "broken"
  shutil.copytree(good, broken)
  missing = dict(tensors)
  del missing["model.layers.1.mlp.up_proj.weight"]
  missing["model.layers.9.extra.weight"] = np.zeros(2, np.float32)
  save_file(missing, broken / "model.safetensors")
  with pytest.raises(ValueError, match=r"missing \['model.layers.1.mlp.up_proj.weight'\].*layers.9.extra"):
    hf_io.load_hf_checkpoint(str(broken))
  wrong = dict(tensors)
  wrong["model.norm.weight"] = np.zeros(5, np.float32)
  save_file(wrong, broken / "model.safetensors")
  with pytest.raises(ValueError, match="model.norm.weight has shape"):
    hf_io.load_hf_checkpoint(str(broken))


def test_bfloat16_load_is_close_to_float32(hf_folder, padded_batch):
  _, folder = hf_folder("llama")
  f32, _ = hf_io.load_hf_checkpoint(folder)
  bf16, config = hf_io.load_hf_checkpoint(folder, dtype="bfloat16")
  assert config.compute_dtype == jnp.bfloat16
  ids, mask, _ = padded_batch(np.random.default_rng(7))
  a = np.asarray(f32(jnp.asarray(ids, jnp.int32), jnp.asarray(mask)))
  b = np.asarray(bf16(jnp.asarray(ids, jnp.int32), jnp.asarray(mask))).astype(np.float32)
  assert b.dtype == np.float32 and np.abs(a - b)[mask.astype(bool)].max() < 0.05


def test_qwen2_slides_only_from_max_window_layers_on(tiny_hf_configs):
  config = model_config.from_hf(tiny_hf_configs["qwen2_window"])
  assert config.layer_types == ("full_attention", "sliding_attention", "sliding_attention")
  assert [config.slides(i) for i in range(3)] == [False, True, True]
  assert model_config.from_hf(model_config.to_hf(config)) == config
  mistral = model_config.from_hf(tiny_hf_configs["mistral_window"])
  assert all(mistral.slides(i) for i in range(mistral.num_layers))  # Mistral's window is in every layer
