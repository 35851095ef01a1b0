"""Test-wide settings: float64 is on, so theory checks are exact; float32 tests pass float32 arrays. One
persistent compilation cache serves the whole session: both xdist workers, the CLI subprocesses and the
notebook kernels (they inherit the environment variable), so a program compiled by one is loaded by the
others; it is created by the first process that reads this file and removed when that process exits."""

import atexit
import os
import shutil
import tempfile

import hypothesis
import jax

from gshf_jax.workarounds import apply_cpu_workarounds

# The test extra installs libtpu (for compiling to TPU slices, tests/llm/test_aot.py): every computation here
# runs on the CPU, so jax (here and in the tests' subprocesses) is kept from probing for a TPU backend.
os.environ.setdefault("JAX_PLATFORMS", "cpu")
jax.config.update("jax_platforms", os.environ["JAX_PLATFORMS"])
apply_cpu_workarounds()  # before the first computation; notebook kernels inherit it
# The suite is compile-bound (small shapes, many programs): without LLVM's optimizations XLA compiles about
# a third faster and the small programs run about as fast. Tests compare with tolerances, or runs made under
# the same flags (the tests' subprocesses set it too).
if "--xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} --xla_backend_optimization_level=0".strip()
jax.config.update("jax_enable_x64", True)

if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
  os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="gshf-jax-compilation-cache-")
  atexit.register(shutil.rmtree, os.environ["JAX_COMPILATION_CACHE_DIR"], ignore_errors=True)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
jax.config.update("jax_compilation_cache_dir", os.environ["JAX_COMPILATION_CACHE_DIR"])
jax.config.update("jax_persistent_cache_min_compile_time_secs", float(os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"]))

# In CI the examples are derandomized, so a red run is reproducible; locally they vary run to run.
hypothesis.settings.register_profile("default", max_examples=40, deadline=None,
                                     derandomize=bool(os.environ.get("CI")))
hypothesis.settings.load_profile("default")


# The longest files, longest first (measured on 2 cores with --durations).
LONGEST = ("tests/bandit_sim/test_experiment_runs.py", "tests/llm/test_pipelines.py", "tests/llm/test_trainers.py",
           "tests/llm/test_models.py", "tests/test_project.py",
           "tests/bandit_sim/test_rso.py", "tests/bandit_sim/test_online.py", "tests/llm/test_oracle_evaluate.py",
           "tests/llm/test_sharding.py")


def pytest_collection_modifyitems(items):
  """The longest files first: xdist (--dist loadfile --no-loadscope-reorder) hands files to the workers in
  collection order, one more whenever a worker finishes one, so a long file started last would leave the
  other worker idle at the end. (xdist's default order, most tests first, put these late.)"""
  first = lambda item: next((i for i, name in enumerate(LONGEST) if item.nodeid.startswith(name + "::")), len(LONGEST))
  items.sort(key=first)  # stable: the other files keep their order
