"""Device meshes and parameter/batch placement (MaxText style): every parameter carries logical axis names
(llm.models.layers.annotated: "vocab", "embed", "q_heads", "kv_heads", "qkv", "mlp", "norm"; "layers", the
stacked axis of scanned layers), and `rules` map each logical name to mesh axes. A logical axis whose mesh axes do not divide the array's dimension is
replicated instead (e.g. 2 kv heads on a 4-way tensor axis).

Axis types: the mesh is built with `AxisType.Auto` on purpose. Params, optimizer state and batches are
placed with NamedSharding and `jax.jit` gets in/out shardings; XLA's sharding propagation chooses the
intermediates. (`jax.make_mesh`'s default, Explicit, would make every intermediate's sharding part of its
type and require annotating each einsum.)
"""

import functools

import jax
import numpy as np
from flax import nnx
from jax.sharding import AxisType, NamedSharding, PartitionSpec

MESH_AXES = ("data", "fsdp", "tensor")
DEFAULT_RULES = (
    ("batch", ("data", "fsdp")),
    ("vocab", "tensor"),
    ("embed", "fsdp"),
    ("q_heads", "tensor"),
    ("kv_heads", "tensor"),
    ("qkv", "tensor"),
    ("mlp", "tensor"),
    ("norm", None),
    ("layers", None),  # every device holds its shards of every layer: lax.scan slices one layer per step
)


def make_mesh(shape, devices=None):
  """A Mesh with axes MESH_AXES from {"data": d, "fsdp": f, "tensor": t} (missing axes have size 1; one
  size may be -1: all remaining devices). Axis types Auto (see the module docstring).

  Raises:
    ValueError: unknown axis names, sizes whose product is not the device count, or (on a TPU slice) sizes
      that are not products of its physical axes.
  """
  devices = jax.devices() if devices is None else devices
  unknown = sorted(set(shape) - set(MESH_AXES))
  if unknown:
    raise ValueError(f"mesh axes must be among {MESH_AXES}, got {unknown}")
  sizes = [int(shape.get(axis, 1)) for axis in MESH_AXES]
  if sizes.count(-1) > 1 or any(s == 0 or s < -1 for s in sizes):
    raise ValueError(f"mesh sizes must be positive (at most one -1), got {dict(zip(MESH_AXES, sizes))}")
  if -1 in sizes:
    rest = int(np.prod([s for s in sizes if s != -1]))
    sizes[sizes.index(-1)] = len(devices) // rest
  if int(np.prod(sizes)) != len(devices):
    raise ValueError(f"mesh {dict(zip(MESH_AXES, sizes))} needs {int(np.prod(sizes))} devices, have {len(devices)}")
  try:
    return jax.make_mesh(tuple(sizes), MESH_AXES, axis_types=(AxisType.Auto,) * len(MESH_AXES), devices=devices)
  except NotImplementedError as e:  # a TPU slice: each axis must be a product of its physical axes
    raise ValueError(f"mesh {dict(zip(MESH_AXES, sizes))} does not map onto the slice's physical axes "
                     f"({str(e).split('. ')[0]}); choose sizes that are products of them") from None


def logical_to_spec(names, shape, mesh, rules=DEFAULT_RULES):
  """PartitionSpec for an array of `shape` whose axes have logical `names`; mesh axes already used by an
  earlier dimension, or not dividing the dimension, are dropped (replicated)."""
  rules = dict(rules)
  used, spec = set(), []
  for name, dim in zip(names, shape):
    axes = rules.get(name)
    axes = () if axes is None else (axes,) if isinstance(axes, str) else tuple(axes)
    axes = tuple(a for a in axes if a not in used and mesh.shape[a] > 1)
    size = int(np.prod([mesh.shape[a] for a in axes])) if axes else 1
    if not axes or dim % size:
      spec.append(None)
      continue
    used.update(axes)
    spec.append(axes[0] if len(axes) == 1 else axes)
  return PartitionSpec(*spec)


def param_shardings(model, mesh, rules=DEFAULT_RULES):
  """An nnx.State of NamedSharding with the structure of nnx.state(model, nnx.Param) (model may be
  abstract, from nnx.eval_shape)."""
  def sharding_of(variable):
    value = variable.get_value()
    names = variable.get_metadata().get("out_sharding") or (None,) * value.ndim
    return variable.replace(NamedSharding(mesh, logical_to_spec(names, value.shape, mesh, rules)))

  return jax.tree.map(sharding_of, nnx.state(model, nnx.Param), is_leaf=lambda x: isinstance(x, nnx.Variable))


def shard_model(model, mesh, rules=DEFAULT_RULES):
  """Moves the model's parameters onto their shards, in place; returns the model."""
  shardings = param_shardings(model, mesh, rules)
  state = nnx.state(model, nnx.Param)
  nnx.update(model, jax.tree.map(lambda v, s: jax.device_put(v, s), state, shardings))
  return model


def batch_sharding(mesh, rules=DEFAULT_RULES, *, microbatched=False):
  """NamedSharding of a [B, ...] batch: B split over the "batch" rule's axes (data and fsdp); with
  microbatched, of an [A, B, ...] batch of A micro-batches (llm.training.step), each one split the same way."""
  axes = dict(rules)["batch"]
  return NamedSharding(mesh, PartitionSpec(None, axes) if microbatched else PartitionSpec(axes))


def constrain_batch(x, rules=DEFAULT_RULES):
  """x [B, ...] held split over the "batch" rule's axes of the abstract mesh in context where they divide B
  (jax.lax.with_sharding_constraint); x unchanged without a mesh."""
  mesh = jax.sharding.get_abstract_mesh()
  if mesh.empty:
    return x
  spec = logical_to_spec(("batch",) + (None,) * (x.ndim - 1), x.shape, mesh, rules)
  return jax.lax.with_sharding_constraint(x, NamedSharding(mesh, spec))


def traced_on(mesh, fn):
  """`fn` traced with `mesh` as the abstract mesh in context (jax.sharding.use_abstract_mesh): the mesh
  llm.models.splash runs its kernel over in shard_map, since XLA cannot partition a Pallas kernel."""
  @functools.wraps(fn)
  def call(*args, **kwargs):
    with jax.sharding.use_abstract_mesh(mesh.abstract_mesh):
      return fn(*args, **kwargs)

  return call


def state_shardings(tree, mesh):
  """The NamedSharding of every array of `tree` (e.g. an optimizer state built from sharded params by
  llm.training.step.init_optimizer_state); arrays not yet on `mesh` (step counts) are replicated on it."""
  def sharding_of(x):
    s = getattr(x, "sharding", None)
    return s if isinstance(s, NamedSharding) and s.mesh == mesh else NamedSharding(mesh, PartitionSpec())
  return jax.tree.map(sharding_of, tree)
