"""Test-wide settings: float64 is on, so theory checks are exact; float32 tests pass float32 arrays."""

import jax
import hypothesis

jax.config.update("jax_enable_x64", True)

hypothesis.settings.register_profile("default", max_examples=40, deadline=None)
hypothesis.settings.load_profile("default")
