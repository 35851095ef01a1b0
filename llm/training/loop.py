"""The training loop every trainer (SFT, reward model, DPO family) runs.

`train(model, loss_fn, arrays, train_config, out_dir)`: AdamW with cosine decay and warm-up, gradient
accumulation and clipping (llm.training.step), params / optimizer state / batches sharded over a mesh
(llm.parallel.sharding), per-process data shards (llm.parallel.distributed), metrics to `out_dir/metrics.jsonl`,
TensorBoard (`out_dir/tensorboard`) and optionally W&B (`out_dir/wandb`) from process 0, a progress bar, the eval
loss every N steps, and orbax checkpoints every N steps (`out_dir/checkpoints`). Run it again with the same arguments after a crash and
it resumes from the last checkpoint to the same result as an uninterrupted run: the batch of each step is
a function of the run's RNG key and the step (llm.training.data.batch_indices). A non-finite loss or gradient
stops the run with FloatingPointError before anything is saved, so the last checkpoint stays good.
"""

import json
import math
import os

import jax
import jax.numpy as jnp
from flax import nnx

from gshf_jax import atomic
from llm.models import lora, transformer
from llm.parallel import distributed, sharding
from llm.training import checkpoint, data
from llm.training import step as train_step


def total_steps(num_examples, config):
  """Optimizer steps of a run: train.max_steps, else epochs * (N // batch_size)."""
  if num_examples < config.batch_size:
    raise ValueError(f"the dataset has {num_examples} examples, fewer than train.batch_size = {config.batch_size}")
  return config.max_steps or config.epochs * (num_examples // config.batch_size)


def train(model, loss_fn, arrays, config, out_dir, *, eval_arrays=None, mesh=None, description="train",
          on_step=None):
  """Trains `model` in place (or resumes its run in out_dir) and returns the last metrics.

  Args:
    model: an llm.models.transformer.Transformer (its params are replaced by the trained ones). With LoRA
      adapters (llm.models.lora) only the adapters (and a score head) train and have optimizer state.
    loss_fn: (model, micro_batch dict of [b, ...] arrays) -> (scalar loss, {name: scalar metric}).
    arrays: {name: np.ndarray [N, ...]}, the full training set, identical on every process.
    config: llm.training.config.TrainSection.
    out_dir: folder for checkpoints, metrics.jsonl and tensorboard/.
    eval_arrays: optional {name: [M, ...]}: mean loss and metrics over it every train.eval_every steps and
      at the end.
    mesh: a jax Mesh (default: llm.parallel.sharding.make_mesh(config.mesh)).
    description: the progress bar's label.
    on_step: optional (step, steps, params) -> None, called after each optimizer step (after its
      checkpoint), e.g. to export snapshots along training (trainers.snapshot_exporter).

  Returns:
    {"step", "train/<metric>" of the last step, "eval/<metric>" of the last evaluation}.
  """
  check_positions(model, arrays, "data.train")
  if eval_arrays is not None:
    check_positions(model, eval_arrays, "data.eval")
  num_examples = data.num_rows(arrays)
  steps = total_steps(num_examples, config)
  micro = config.batch_size // config.grad_accum
  mesh = mesh or sharding.make_mesh(config.mesh)
  schedule = train_step.cosine_schedule(config.learning_rate, steps, config.warmup_ratio)
  sharding.shard_model(model, mesh)
  trainable = lora.trainable(model)  # every parameter, or the LoRA adapters (the base frozen)
  graphdef, params, frozen = nnx.split(model, trainable, ...)
  param_shardings, frozen_shardings = sharding.param_shardings(model, mesh).split(trainable, ...)
  opt_state = train_step.init_optimizer_state(params)
  opt_shardings = sharding.state_shardings(opt_state, mesh)
  opt_state = jax.device_put(opt_state, opt_shardings)
  batch_shardings = sharding.batch_sharding(mesh, microbatched=True)
  step_fn = sharding.traced_on(mesh, train_step.make_train_step(
      param_shardings=param_shardings, frozen_shardings=frozen_shardings, opt_shardings=opt_shardings,
      batch_shardings=batch_shardings))
  mngr = checkpoint.manager(os.path.join(os.path.abspath(out_dir), "checkpoints"),
                            max_to_keep=config.keep_checkpoints)
  state = checkpoint.TrainState(params, opt_state, 0, jax.random.key(config.seed), 0)
  state = checkpoint.restore(mngr, state) or state
  params, opt_state, rng = state.params, state.opt_state, state.rng
  logger = MetricsLogger(out_dir, state.step, tensorboard=config.tensorboard,
                         wandb=config.wandb and (config.wandb, config.wandb_project, description))
  rows = distributed.process_rows(micro)
  evaluate = None if eval_arrays is None else make_evaluator(graphdef, frozen, loss_fn, eval_arrays, micro, mesh)
  result = {"step": state.step}
  bar = progress_bar(steps, state.step, description, enabled=config.progress)
  try:
    for step in range(state.step, steps):
      index = data.batch_indices(rng, step, num_examples, config.batch_size)
      local = {k: v[:, rows] for k, v in data.microbatches(arrays, index, config.grad_accum).items()}
      hparams = train_step.hyperparameters(schedule(step), weight_decay=config.weight_decay,
                                           max_grad_norm=config.max_grad_norm)
      batch = distributed.global_batch(local, batch_shardings)
      params, opt_state, metrics = step_fn(graphdef, loss_fn, params, frozen, opt_state, batch, hparams)
      metrics = {f"train/{k}": float(v) for k, v in jax.device_get(metrics).items()}
      if not all(math.isfinite(v) for v in metrics.values()):
        last = mngr.latest_step()
        raise FloatingPointError(
            f"{description}: non-finite loss or gradient at step {step + 1} ({metrics}); stopped. The last "
            f"good checkpoint is {'step ' + str(last) if last is not None else 'none'} in {mngr.directory} "
            "(lower train.learning_rate or check the data, then rerun to resume from it)")
      done = step + 1
      result = {"step": done, **metrics}
      bar.update(1)
      if done % config.log_every == 0 or done == steps:
        logger.log(done, {**metrics, "train/learning_rate": float(hparams["learning_rate"])})
        bar.set_postfix(loss=f"{metrics['train/loss']:.4f}")
      if evaluate and config.eval_every and done % config.eval_every == 0 and done < steps:
        logger.log(done, evaluate(params))
      if done % config.save_every == 0 or done == steps:
        if not bool(all_finite(params)):  # a checkpoint is written only when every parameter is finite
          last = mngr.latest_step()
          raise FloatingPointError(
              f"{description}: non-finite parameters after step {done}; not saved, stopped. The last good "
              f"checkpoint is {'step ' + str(last) if last is not None else 'none'} in {mngr.directory} "
              "(check train.learning_rate and train.max_grad_norm, then rerun to resume from it)")
        checkpoint.save(mngr, checkpoint.TrainState(params, opt_state, done, rng, done * config.batch_size))
      if on_step:
        on_step(done, steps, params)
  finally:
    bar.close()
    mngr.close()
  if evaluate:
    result.update(evaluate(params))
    logger.log(result["step"], {k: v for k, v in result.items() if k.startswith("eval/")})
  logger.close()
  nnx.update(model, params)
  return result


def check_positions(model, arrays, key):
  """transformer.check_positions for the longest prompt + response of the data under config key `key`."""
  responses = [k for k in arrays if k.endswith("_mask") and k != "prompt_mask"]
  longest = max(int((arrays["prompt_mask"].sum(1) + arrays[k].sum(1)).max()) for k in responses)
  transformer.check_positions(model, longest, f"{key}: a prompt + response",
                              "lower data.max_prompt_length or data.max_response_length")


@jax.jit
def all_finite(tree):
  """Whether every entry of every array in `tree` is finite (one fused reduction)."""
  return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]))


def make_evaluator(graphdef, frozen, loss_fn, arrays, micro, mesh):
  """params (with the `frozen` rest of the model) -> {"eval/<metric>": mean over the eval set's batches of
  `micro` rows} (the last N mod micro rows are left out, as in training)."""
  num = data.num_rows(arrays)
  if num < micro:
    raise ValueError(f"the eval set has {num} examples, fewer than one micro-batch "
                     f"(train.batch_size / train.grad_accum = {micro})")
  batch_shardings = sharding.batch_sharding(mesh)
  rows = distributed.process_rows(micro)

  def evaluate(params):
    totals = {}
    for start in range(0, num - micro + 1, micro):
      local = {k: v[start:start + micro][rows] for k, v in arrays.items()}
      loss, metrics = train_step.eval_loss(graphdef, loss_fn, params, frozen,
                                           distributed.global_batch(local, batch_shardings))
      for k, v in {"loss": loss, **metrics}.items():
        totals[k] = totals.get(k, 0.0) + float(v)
    count = num // micro
    return {f"eval/{k}": v / count for k, v in totals.items()}

  return sharding.traced_on(mesh, evaluate)


class MetricsLogger:
  """metrics.jsonl ({"step", **metrics} per line), TensorBoard scalars and, with `wandb` = (mode, project,
  description), a W&B run, written by process 0 only. On a resumed run the lines of steps after the
  checkpoint are dropped first, so the log matches the run, and so is a torn last line (a crash or a full
  disk in the middle of a write); the W&B run (id: a hash of out_dir) is resumed, not started anew."""

  def __init__(self, out_dir, resume_step, *, tensorboard=True, wandb=None):
    self.main = distributed.is_main_process()
    self.file = self.writer = self.run = None
    if not self.main:
      return
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, "metrics.jsonl")
    if os.path.exists(path):
      atomic.write_text(path, "".join(logged_lines(path, resume_step)))
    self.file = open(path, "a")
    if tensorboard:
      from tensorboardX import SummaryWriter
      self.writer = SummaryWriter(os.path.join(out_dir, "tensorboard"), purge_step=resume_step + 1)
    if wandb:
      self.run = wandb_run(out_dir, *wandb)

  def log(self, step, metrics):
    if not self.main:
      return
    self.file.write(json.dumps({"step": step, **metrics}) + "\n")
    self.file.flush()
    if self.writer:
      for name, value in metrics.items():
        self.writer.add_scalar(name, value, step)
      self.writer.flush()
    if self.run:
      self.run.log(metrics, step=step)

  def close(self):
    if self.file:
      self.file.close()
    if self.writer:
      self.writer.close()
    if self.run:
      self.run.finish()


def wandb_run(out_dir, mode, project, description):
  """A W&B run logging to out_dir/wandb (mode "offline": only there, no network; `wandb sync` uploads it),
  named after out_dir, with an id fixed by out_dir's absolute path so a resumed run continues it."""
  import hashlib

  import wandb
  folder = os.path.abspath(out_dir)
  run_id = hashlib.sha256(folder.encode()).hexdigest()[:16]
  return wandb.init(project=project, dir=folder, mode=mode, id=run_id, resume="allow", name=os.path.basename(folder),
                    job_type=description, settings=wandb.Settings(silent=True, console="off"))


def logged_lines(path, last_step):
  """The lines of metrics.jsonl up to step `last_step`, without a torn last line.

  Raises:
    ValueError: "FILE:LINE: ..." for a malformed line before the last one (not a write cut short).
  """
  with open(path, "rb") as f:
    lines = [line for line in f.read().decode("utf-8", "replace").splitlines(keepends=True) if line.strip()]
  kept = []
  for number, line in enumerate(lines, 1):
    try:
      step = json.loads(line)["step"]
    except (ValueError, KeyError, TypeError):
      if number == len(lines):
        break  # torn by the crash this run resumes from
      raise ValueError(f"{path}:{number}: not a metrics line; move the file away to resume") from None
    if step <= last_step:
      kept.append(line if line.endswith("\n") else line + "\n")
  return kept


def progress_bar(total, initial, description, *, enabled):
  from tqdm.auto import tqdm
  return tqdm(total=total, initial=initial, desc=description, disable=not (enabled and distributed.is_main_process()),
              dynamic_ncols=True, leave=False)
