"""TPU slices without a TPU: compile-only devices of a named topology ("v5e:2x2", "v5p:4x4x4", "v6e:16x16")
from libtpu (the `tpu-compile` extra), and the published per-chip figures that turn a compiled program into
a memory fit and a roofline (llm.training.aot).

libtpu compiles for any slice from a CPU host; it only needs to be told not to look for a TPU of its own
(TPU_SKIP_MDS_QUERY, TPU_WORKER_HOSTNAMES, TPU_ACCELERATOR_TYPE: set here when unset, before it loads).
"""

import os
from typing import NamedTuple

GIB = 2 ** 30


class Chip(NamedTuple):
  """One chip's HBM (bytes), dense bf16 peak (flop/s), HBM bandwidth (bytes/s) and TensorCores."""
  hbm_bytes: float
  peak_flops: float
  hbm_bandwidth: float
  cores: int


# Google Cloud's published per-chip figures, by the device_kind libtpu reports.
CHIPS = {
    "TPU v4": Chip(32 * GIB, 275e12, 1228e9, 2),
    "TPU v5 lite": Chip(16 * GIB, 197e12, 819e9, 1),  # v5e
    "TPU v5": Chip(95 * GIB, 459e12, 2765e9, 2),  # v5p
    "TPU v6 lite": Chip(32 * GIB, 918e12, 1640e9, 1),  # v6e (Trillium)
}


def compile_only_devices(topology):
  """The devices of the slice `topology` (e.g. "v5e:2x2": a 2x2 v5e slice), for jit(...).lower(...).compile()
  only; nothing runs on them.

  Raises:
    ValueError: libtpu is missing, or the name is not a slice it knows (one line, naming `topology`).
  """
  from jax.experimental import topologies
  for name, value in (("TPU_SKIP_MDS_QUERY", "1"), ("TPU_WORKER_HOSTNAMES", "localhost"),
                      ("TPU_ACCELERATOR_TYPE", "v5litepod-4")):
    os.environ.setdefault(name, value)  # no metadata server, one local host: compile only
  try:
    return list(topologies.get_topology_desc(topology_name=topology, platform="tpu").devices)
  except RuntimeError as e:
    if "TPU support not installed" in str(e):
      raise ValueError(f"--compile {topology}: compiling for a TPU slice needs libtpu: "
                       "pip install -e \".[tpu-compile]\"") from None
    first = str(e).splitlines()[0]
    if "INVALID_ARGUMENT" in first:
      raise ValueError(f"--compile {topology}: not a TPU slice libtpu knows ({first}); names look like v5e:2x2, "
                       "v5p:2x2x2, v6e:4x4") from None
    raise ValueError(f"--compile {topology}: libtpu failed: {first}") from None  # e.g. another process holds it


def device_spec(device):
  """The Chip figures of one compile-only device: a whole chip, or its share where each TensorCore is a
  device of its own (v4 without megacore).

  Raises:
    ValueError: a device kind with no published figures in CHIPS.
  """
  chip = CHIPS.get(device.device_kind)
  if chip is None:
    raise ValueError(f"no published figures for {device.device_kind!r}; known: {sorted(CHIPS)}")
  cores = getattr(device, "num_cores", chip.cores)
  share = cores / chip.cores
  return Chip(chip.hbm_bytes * share, chip.peak_flops * share, chip.hbm_bandwidth * share, cores)
