"""Workarounds for XLA on the CPU, each with the jax version it was seen with and what breaks without it.
Applied in one place: `apply_cpu_workarounds()`, called before JAX's first computation by the entry points
that run the affected vmaps (`python -m bandit_sim.experiment`, `notebooks/execute.py`, and the test
suite's conftest, whose environment notebook kernels inherit).
"""

import os

# jax 0.10.2: XLA's CPU concurrency-optimized scheduler stalls, every thread idle, on some large vmaps.
# Without this flag the bandit RSO pipeline over 50 seeds never finished; with it, 200 seeds ran in 10 s.
CPU_SCHEDULER_FLAG = "--xla_cpu_enable_concurrency_optimized_scheduler=false"

# jax 0.10: the CPU runtime was also seen to stall on one vmap of 200 seeds x 3 dimensions of online GSHF
# with the Option II enhancer, and ran 100 fine: bandit experiments map over seeds in chunks of this many.
SEED_CHUNK = 100


def apply_cpu_workarounds() -> None:
  """Adds CPU_SCHEDULER_FLAG to XLA_FLAGS; takes effect only before JAX's first computation."""
  flags = os.environ.get("XLA_FLAGS", "")
  if CPU_SCHEDULER_FLAG not in flags:
    os.environ["XLA_FLAGS"] = f"{flags} {CPU_SCHEDULER_FLAG}".strip()
