"""Train-state checkpoints with orbax: params, optimizer state, step, RNG key and data position, saved
atomically (orbax writes to a temporary folder and renames it when complete), keeping the newest
`max_to_keep`, and restored onto any mesh (each array read straight into its target sharding).
"""

from typing import Any, NamedTuple

import jax
import numpy as np
import orbax.checkpoint as ocp
from jax.sharding import NamedSharding, PartitionSpec


class TrainState(NamedTuple):
  params: Any  # nnx.State of the trained params (every nnx.Param, or the LoRA adapters)
  opt_state: Any  # optax state
  step: int
  rng: jax.Array  # a typed PRNG key
  data_position: int  # examples consumed so far (where the data iterator resumes)


def manager(directory, *, max_to_keep=3, save_interval_steps=1):
  """An orbax CheckpointManager for `directory` (created if missing; temporary folders of a save that a
  killed run left unfinished are removed)."""
  options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, save_interval_steps=save_interval_steps,
                                         create=True, cleanup_tmp_directories=True)
  return ocp.CheckpointManager(directory, options=options)


def save(mngr, state, *, force=False):
  """Saves `state` under its step (waits until it is on disk); returns whether a checkpoint was written."""
  arrays = {"params": state.params, "opt_state": state.opt_state,
            "rng": replicated(jax.random.key_data(state.rng), state.params)}
  meta = {"step": int(state.step), "data_position": int(state.data_position),
          "rng_impl": str(jax.random.key_impl(state.rng))}
  saved = mngr.save(int(state.step), args=ocp.args.Composite(arrays=ocp.args.StandardSave(arrays),
                                                             meta=ocp.args.JsonSave(meta)), force=force)
  mngr.wait_until_finished()
  return saved


def restore(mngr, like, step=None):
  """The TrainState of `step` (default: the latest), or None when there is no checkpoint.

  Args:
    mngr: from `manager`.
    like: a TrainState whose params / opt_state (arrays or jax.ShapeDtypeStruct with shardings) give the
      structure, dtypes and target shardings, e.g. a freshly initialized state on the target mesh.
    step: which checkpoint.

  Raises:
    ValueError: (one line) the checkpoint's parameter tree is not `like`'s.
  """
  step = mngr.latest_step() if step is None else step
  if step is None:
    return None
  abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct,
                          {"params": like.params, "opt_state": like.opt_state,
                           "rng": replicated(jax.random.key_data(like.rng), like.params)})
  try:
    restored = mngr.restore(step, args=ocp.args.Composite(arrays=ocp.args.StandardRestore(abstract),
                                                          meta=ocp.args.JsonRestore()))
  except ValueError as e:
    if "tree structures do not match" not in str(e):
      raise
    raise ValueError(f"{mngr.directory}: the checkpoint of step {step} holds another parameter layout than this "
                     "run's model (model.scan_layers or the LoRA settings changed since it was saved); resume with "
                     "the settings that made it, or start over (--overwrite)") from None
  arrays, meta = restored["arrays"], restored["meta"]
  rng = jax.random.wrap_key_data(arrays["rng"], impl=meta["rng_impl"])
  return TrainState(arrays["params"], arrays["opt_state"], meta["step"], rng, meta["data_position"])


def replicated(x, like):
  """x as a global array replicated over the mesh of `like`'s first array (orbax saves only global arrays
  in a multi-process run); x itself when `like` is not on a mesh."""
  sharding = getattr(jax.tree.leaves(like)[0], "sharding", None)
  if not isinstance(sharding, NamedSharding):
    return x
  value = np.asarray(jax.device_get(x))
  return jax.make_array_from_callback(value.shape, NamedSharding(sharding.mesh, PartitionSpec()),
                                      lambda index: value[index])
