"""Test-wide settings: float64 is on, so theory checks are exact; float32 tests pass float32 arrays."""

import os

import hypothesis
import jax

from gshf_jax.workarounds import apply_cpu_workarounds

apply_cpu_workarounds()  # before the first computation; notebook kernels inherit it
jax.config.update("jax_enable_x64", True)

# In CI the examples are derandomized, so a red run is reproducible; locally they vary run to run.
hypothesis.settings.register_profile("default", max_examples=40, deadline=None,
                                     derandomize=bool(os.environ.get("CI")))
hypothesis.settings.load_profile("default")
