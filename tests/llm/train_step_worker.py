"""Worker for tests/llm/test_sharding.py, run in a subprocess (device count and distributed setup must be
fixed before JAX starts): 3 AdamW steps of a tiny Llama on a mesh, params written to OUT.npz.

python train_step_worker.py OUT MESH_JSON [COORDINATOR NUM_PROCESSES PROCESS_ID]
"""

import json
import sys


def main():
  out, mesh_shape = sys.argv[1], json.loads(sys.argv[2])
  from llm.parallel import distributed
  if len(sys.argv) > 3:
    distributed.initialize(sys.argv[3], int(sys.argv[4]), int(sys.argv[5]))
  import jax
  import jax.numpy as jnp
  import numpy as np
  import transformers
  from flax import nnx
  from jax.experimental import multihost_utils

  from llm.models import config as model_config
  from llm.models.transformer import init_model
  from llm.parallel import sharding
  from llm.training import step as train_step

  config = model_config.from_hf(transformers.LlamaConfig(vocab_size=96, hidden_size=32, intermediate_size=64,
                                                         num_hidden_layers=2, num_attention_heads=4,
                                                         num_key_value_heads=2))
  rng = np.random.default_rng(0)
  ids = rng.integers(0, 96, (8, 12)).astype(np.int32)
  mask = np.ones((8, 12), np.int32)
  mask[::3, :4] = 0
  model = init_model(config)
  mesh = sharding.make_mesh(mesh_shape)
  sharding.shard_model(model, mesh)
  graphdef, params, frozen = nnx.split(model, nnx.Param, ...)
  opt_state = train_step.init_optimizer_state(params)
  opt_shardings = sharding.state_shardings(opt_state, mesh)
  opt_state = jax.device_put(opt_state, opt_shardings)
  rows = distributed.process_rows(8)
  batch_sharding = sharding.batch_sharding(mesh, microbatched=True)
  batch = distributed.global_batch({"input_ids": ids[None, rows], "attention_mask": mask[None, rows]},
                                   batch_sharding)
  step = train_step.make_train_step(param_shardings=sharding.param_shardings(model, mesh),
                                    frozen_shardings=frozen, opt_shardings=opt_shardings,
                                    batch_shardings=batch_sharding)  # frozen: empty, every param trains
  losses = []
  for _ in range(3):
    params, opt_state, metrics = step(graphdef, train_step.next_token_loss, params, frozen, opt_state, batch,
                                     train_step.hyperparameters(1e-2))
    losses.append(float(metrics["loss"]))
  flat = {"/".join(map(str, path)): np.asarray(multihost_utils.process_allgather(v.get_value(), tiled=True))
          for path, v in nnx.to_flat_state(params)}
  q = params["blocks"][0]["q_proj"]["kernel"].get_value()
  info = {"losses": losses, "devices": len(jax.devices()), "processes": jax.process_count(),
          "q_shard_shape": list(q.addressable_shards[0].data.shape), "q_shape": list(q.shape)}
  if len(jax.devices()) == 8:  # checkpoint on this mesh, restore onto a (1, 1, 8) mesh
    from llm.training import checkpoint
    mngr = checkpoint.manager(out + "_ckpt")
    checkpoint.save(mngr, checkpoint.TrainState(params, opt_state, 3, jax.random.key(7), 24))
    other = sharding.make_mesh({"tensor": 8})
    target = init_model(config)
    sharding.shard_model(target, other)
    target_params = nnx.state(target, nnx.Param)
    target_opt = jax.device_put(train_step.init_optimizer_state(target_params),
                                sharding.state_shardings(train_step.init_optimizer_state(target_params), other))
    restored = checkpoint.restore(mngr, checkpoint.TrainState(target_params, target_opt, 0, jax.random.key(0), 0))
    rq = restored.params["blocks"][0]["q_proj"]["kernel"].get_value()
    info.update(restored_equal=all(bool(jnp.array_equal(a, b)) for a, b in
                                   zip(jax.tree.leaves((params, opt_state)),
                                       jax.tree.leaves((restored.params, restored.opt_state)))),
                restored_q_shard_shape=list(rq.addressable_shards[0].data.shape), restored_step=restored.step,
                restored_position=restored.data_position)
  np.savez(out, **flat)
  with open(out + ".json", "w") as f:
    json.dump(info, f)


if __name__ == "__main__":
  main()
