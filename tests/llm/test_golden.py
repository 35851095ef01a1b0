"""Parity with transformers without torch: committed tiny checkpoints and the logits PyTorch computed for
them (tests/llm/make_golden.py), left and right padding. Where torch is installed (the test extra) the
live comparison of tests/llm/test_models.py covers the same families, so these are skipped there."""

import importlib.util
import os

import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import load_file

from llm.models import hf_io

GOLDEN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "golden")


@pytest.mark.skipif(importlib.util.find_spec("torch") is not None,
                    reason="torch is installed: tests/llm/test_models.py compares with transformers itself")
@pytest.mark.parametrize("name", ["llama3", "gpt2"])
def test_golden_logits(name):
  folder = os.path.join(GOLDEN, name)
  expected = load_file(os.path.join(folder, "expected.safetensors"))
  model, _ = hf_io.load_hf_checkpoint(folder)
  mask = expected["attention_mask"]
  logits = np.asarray(model(jnp.asarray(expected["input_ids"]), jnp.asarray(mask)))
  real = mask.astype(bool)
  np.testing.assert_allclose(logits[real], expected["logits"][real], atol=1e-4, rtol=0)
