"""Multi-host runs: `jax.distributed.initialize` from arguments or the environment, per-process data
shards, and process-0-only side effects. The same command runs on every host of a TPU slice or GPU
cluster; on CPU the collectives go through gloo (2 processes on 127.0.0.1 in the tests).

Environment (used when the arguments are None): JAX_COORDINATOR_ADDRESS ("host:port"),
JAX_NUM_PROCESSES, JAX_PROCESS_ID. Without them, on a multi-host Cloud TPU slice, a SLURM job of several
tasks or an Open MPI launch, jax.distributed finds all three by itself.
"""

import os

import jax
import numpy as np

from llm.parallel.sharding import traced_on


def initialize(coordinator_address=None, num_processes=None, process_id=None):
  """Joins the multi-process run (a no-op for a single process). Returns (process_index, process_count).

  A process whose peer never arrives waits (and then aborts inside JAX rather than raising): launch such
  runs under a timeout.
  """
  address = coordinator_address or os.environ.get("JAX_COORDINATOR_ADDRESS")
  count = int(num_processes or os.environ.get("JAX_NUM_PROCESSES", 1))
  index = process_id if process_id is not None else os.environ.get("JAX_PROCESS_ID")
  if count > 1 or address:
    if jax.config.jax_platforms in (None, "", "cpu") and not _has_accelerator_env():
      jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address=address, num_processes=count,
                               process_id=None if index is None else int(index))
  elif _cluster_detectable():
    jax.distributed.initialize()  # jax reads the coordinator and ids from the TPU / SLURM / MPI environment
  return jax.process_index(), jax.process_count()


def _cluster_detectable():
  """A multi-host Cloud TPU slice, SLURM job or Open MPI launch, which jax.distributed detects itself."""
  env = os.environ
  return (env.get("TPU_WORKER_HOSTNAMES", "").count(",") > 0 or int(env.get("SLURM_NTASKS", 1)) > 1
          or int(env.get("OMPI_COMM_WORLD_SIZE", 1)) > 1)


def _has_accelerator_env():
  return any(k in os.environ for k in ("TPU_WORKER_ID", "CUDA_VISIBLE_DEVICES", "TPU_ACCELERATOR_TYPE"))


def process_rows(num_rows):
  """The slice of a global batch of num_rows rows this process loads (rows split evenly by process)."""
  count, index = jax.process_count(), jax.process_index()
  if num_rows % count:
    raise ValueError(f"global batch size {num_rows} must be divisible by the process count {count}")
  per = num_rows // count
  return slice(index * per, (index + 1) * per)


def global_batch(local_arrays, sharding):
  """Assembles per-process rows (process_rows of the global batch) into global arrays with `sharding`."""
  return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), local_arrays)


def is_main_process():
  """True on process 0: the one that logs and writes results."""
  return jax.process_index() == 0


def map_batches(fn, arrays, batch_size, sharding=None):
  """fn applied to consecutive batches of `batch_size` rows of arrays ({name: [N, ...]}, the same on every
  process), outputs concatenated to [N, ...] numpy on every process. The last batch is padded by repeating
  rows (so fn, typically jitted, sees one shape). With a NamedSharding each batch is assembled from the
  processes' row slices (process_rows) and placed with it; outputs are gathered from all processes."""
  from jax.experimental import multihost_utils
  num = len(next(iter(arrays.values())))
  rows = process_rows(batch_size) if sharding is not None else slice(None)
  outputs = []
  for start in range(0, num, batch_size):
    index = np.minimum(np.arange(start, start + batch_size), num - 1)
    batch = {k: np.asarray(v)[index][rows] for k, v in arrays.items()}
    batch = global_batch(batch, sharding) if sharding is not None else batch
    out = (fn if sharding is None else traced_on(sharding.mesh, fn))(batch)
    if sharding is not None and jax.process_count() > 1:
      out = multihost_utils.process_allgather(out, tiled=True)
    outputs.append(jax.tree.map(np.asarray, jax.device_get(out)))
  return jax.tree.map(lambda *xs: np.concatenate(xs)[:num], *outputs)
