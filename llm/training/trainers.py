"""The trainers: SFT, Bradley-Terry reward models (and ensembles of them), and the DPO family. Each is a
loss function for llm.training.loop's loop and a `run_*(config)` that loads the model and data named by an
llm.training.config.Config, trains (resuming a killed run), and writes to config.output_dir:

  model/          the trained model as an HF folder with its tokenizer (what later stages load); with
                  LoRA (model.lora_rank > 0) the base with the adapters merged in
  adapter/        with LoRA: the adapters as a PEFT adapter folder (peft.PeftModel.from_pretrained)
  checkpoints/    orbax train states;  metrics.jsonl, tensorboard/ (and wandb/): the training curves
  summary.json    data counts (Appendix H's filter), final metrics, the config

  manifest.json   what made the run (llm.training.manifest): the settings that determine the result and
                  fingerprints of the model folders and data files; written before training starts

A rerun reuses a finished run (summary.json present; it is written last) and resumes an unfinished one
only when its manifest matches; otherwise config.on_change decides (stop with one line, overwrite, resume).
"""

import dataclasses
import glob
import hashlib
import io
import json
import math
import os
import shutil
import zipfile

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.experimental import multihost_utils

from gshf_jax import atomic, losses
from llm.inference import logprobs
from llm.inference import tokenizer as tok
from llm.models import hf_io, lora
from llm.parallel import distributed, sharding
from llm.training import data, manifest
from llm.training.config import (
  flatten,
  get_key,
  lora_targets,
  loss_names,
  loss_options,
  require_file,
  require_writable,
  to_dict,
)
from llm.training.loop import train

# ---------------------------------------------------------------- losses (micro-batch dict -> loss, metrics)


def sft_loss(model, batch):
  """Mean negative log-likelihood per response token, prompt and padding masked (SFT). In training the
  mean is over the tokens of the whole optimizer step (batch["token_weight"], llm.training.data.microbatches),
  so micro-batches with fewer tokens do not weigh more; otherwise over the batch's tokens."""
  total, _ = logprobs.sequence_logprobs(model, batch["prompt_ids"], batch["prompt_mask"], batch["response_ids"],
                                        batch["response_mask"])
  if "token_weight" in batch:
    return -(total * batch["token_weight"]).sum(), {}
  tokens = batch["response_mask"].sum()
  return -total.sum() / jnp.maximum(tokens, 1), {}


def both_responses(batch):
  """(prompt_ids, prompt_mask, response_ids, response_mask) with the chosen rows first and the rejected
  rows after them, [2b, ...]: one forward pass scores both sides of every pair."""
  twice = lambda x: jnp.concatenate([x, x])
  return (twice(batch["prompt_ids"]), twice(batch["prompt_mask"]),
          jnp.concatenate([batch["chosen_ids"], batch["rejected_ids"]]),
          jnp.concatenate([batch["chosen_mask"], batch["rejected_mask"]]))


def reward_model_loss(model, batch):
  """Bradley-Terry negative log-likelihood of Eq. (3), mean over pairs, with accuracy (r_w > r_l) and
  the mean reward margin."""
  r = logprobs.reward_scores(model, *both_responses(batch))
  r_c, r_r = jnp.split(r, 2)
  return losses.reward_loss(r_c, r_r).mean(), {"accuracy": (r_c > r_r).mean(), "margin": (r_c - r_r).mean()}


def policy_logprobs(model, batch):
  """(log pi(chosen | x), log pi(rejected | x)) [b] each, in one forward pass."""
  total, _ = logprobs.sequence_logprobs(model, *both_responses(batch))
  return jnp.split(total, 2)


def make_dpo_loss(section):
  """The DPO-family loss of an llm.training.config.DPOSection, from the gshf_jax.losses registry (the batch
  carries "ref_chosen", "ref_rejected" and, for pessimistic DPO, "gamma_chosen", "gamma_rejected").

    dpo:   -log sigmoid(beta * h + m),  h = log pi/pi0 (a_w) - log pi/pi0 (a_l)      Eq. (9)
           m = uncertainty_coef * (Gamma(x, a_w) - Gamma(x, a_l))                     Eq. (10)
    hinge: relu(1 - beta * h - m) (RSO);   ipo: (h - 1 / (2 beta))^2;   TRL's loss_type family, simpo, orpo

  Several comma-separated losses train on sum_k loss_weights[k] * mean(loss_k) (TRL's loss_weights); the
  response token counts reach the losses that average over tokens. Options no chosen loss can honour
  raise a ValueError here, before any training. Returns a DPOLoss.
  """
  names, weights = loss_names(section), section.loss_weights or None
  options = loss_options(section)
  losses.check_combined(names, weights, margin=section.uncertainty_coef > 0, label_smoothing=section.label_smoothing,
                        **options)
  return DPOLoss(tuple(names), weights and tuple(weights), section.beta, section.uncertainty_coef,
                 section.label_smoothing, tuple(sorted(options.items())))


@dataclasses.dataclass(frozen=True)
class DPOLoss:
  """(model, micro-batch) -> (loss, metrics) of make_dpo_loss. A value (equal settings, equal losses), so
  every run with the same settings reuses one compiled training step (llm.training.step). Metrics under
  TRL's DPOTrainer names: implicit rewards beta * log pi/pi0 of chosen and rejected, their margins and
  accuracies (chosen's above rejected's), and the policy's summed log-probs."""
  names: tuple
  weights: tuple | None
  beta: float
  uncertainty_coef: float
  label_smoothing: float
  options: tuple  # sorted (name, value) items of config.loss_options

  def __call__(self, model, batch):
    pi_c, pi_r = policy_logprobs(model, batch)
    ref_c, ref_r = batch["ref_chosen"], batch["ref_rejected"]
    margin = None
    if self.uncertainty_coef:
      margin = self.uncertainty_coef * (batch["gamma_chosen"] - batch["gamma_rejected"])
    lengths = (batch["chosen_mask"].sum(-1), batch["rejected_mask"].sum(-1))
    pairwise = losses.combined_loss(self.names, self.weights)
    per_pair = pairwise(pi_c, pi_r, ref_c, ref_r, self.beta, margin=margin, label_smoothing=self.label_smoothing,
                        lengths=lengths, **dict(self.options))
    chosen, rejected = self.beta * (pi_c - ref_c), self.beta * (pi_r - ref_r)
    return per_pair.mean(), {"rewards/chosen": chosen.mean(), "rewards/rejected": rejected.mean(),
                             "rewards/margins": (chosen - rejected).mean(),
                             "rewards/accuracies": (chosen > rejected).mean(),
                             "logps/chosen": pi_c.mean(), "logps/rejected": pi_r.mean()}


def uses_reference(section):
  """Whether a DPOSection's losses read pi0's log-probs (SFT, SimPO and ORPO alone do not)."""
  return any(losses.registered(name).uses_reference for name in loss_names(section))


# ---------------------------------------------------------------- models and data


def compute_dtype(section):
  return section.compute_dtype or section.param_dtype


def model_settings(section):
  """The ModelConfig fields a ModelSection sets: dtypes, remat and its policy, scanned layers, attention."""
  return {"dtype": compute_dtype(section), "param_dtype": section.param_dtype, "remat": section.remat,
          "remat_policy": section.remat_policy, "scan_layers": section.scan_layers, "attention": section.attention}


def load_model(section, mesh, *, path=None, key="model.path", **overrides):
  """(model, tokenizer) of an llm.training.config.ModelSection (or another folder `path`, named by the
  config key `key` in errors), placed on `mesh`."""
  path = require_file(key if path else "model.path", path or section.path, folder=True)
  model, _ = hf_io.load_hf_checkpoint(path, mesh=mesh, **{**model_settings(section), **overrides})
  tokenizer = tok.load_tokenizer(section.tokenizer or path)
  return model, tokenizer


def with_adapters(model, section, seed):
  """`model` with LoRA adapters of a ModelSection attached (model.lora_rank > 0; A initialized from `seed`),
  else `model` unchanged."""
  if not section.lora_rank:
    return model
  return lora.add_adapters(model, section.lora_rank, section.lora_alpha, lora_targets(section),
                           rslora=section.lora_rslora, seed=seed)


def preference_arrays(config, tokenizer, path):
  """Tokenized, filtered preference pairs of a JSONL file, and the counts of what was read and dropped."""
  examples, counts = data.load_examples(path, "preferences", skip_malformed=config.data.skip_malformed)
  kept, dropped = data.filter_preferences(examples, tokenizer, config.data.max_prompt_length)
  require_kept(path, kept, {**counts, **dropped})
  arrays = data.tokenize_preferences(tokenizer, kept, config.data.max_prompt_length, config.data.max_response_length,
                                     pad_to_max=config.data.pad_to_max_length)
  return arrays, {**counts, **dropped, "kept": len(kept)}


def sft_arrays(config, tokenizer, path):
  examples, counts = data.load_examples(path, "sft", skip_malformed=config.data.skip_malformed)
  kept = [e for e in examples if data.prompt_fits(tokenizer, e[0], config.data.max_prompt_length)]
  require_kept(path, kept, {**counts, "long_prompt": len(examples) - len(kept)})
  arrays = data.tokenize_sft(tokenizer, kept, config.data.max_prompt_length, config.data.max_response_length,
                             pad_to_max=config.data.pad_to_max_length)
  return arrays, {**counts, "long_prompt": len(examples) - len(kept), "kept": len(kept)}


def require_kept(path, kept, counts):
  if not kept:
    raise ValueError(f"{path}: the filter left no example ({counts}; long_prompt: prompts over "
                     "data.max_prompt_length tokens, identical: chosen == rejected)")


def eval_arrays_of(config, tokenizer, make):
  if not config.data.eval:
    return None, None
  return make(config, tokenizer, require_file("data.eval", config.data.eval))


@nnx.jit
def pair_logprobs(model, batch):
  """policy_logprobs, jitted once (every call with the same shapes reuses it)."""
  return policy_logprobs(model, batch)


@nnx.jit
def pair_rewards(model, batch):
  """(r(x, chosen), r(x, rejected)) [b] each of a scalar-head model, jitted once."""
  return jnp.split(logprobs.reward_scores(model, *both_responses(batch)), 2)


def reference_logprobs(model, arrays, batch_size, mesh):
  """{"ref_chosen", "ref_rejected"} [N] float32: log pi0 of every pair's responses, computed once."""
  out = distributed.map_batches(lambda b: pair_logprobs(model, b), arrays, batch_size, sharding.batch_sharding(mesh))
  return {"ref_chosen": out[0], "ref_rejected": out[1]}


def ensemble_members(folder):
  """The member model folders of a reward ensemble run (`reward` with ensemble_size k), in order."""
  members = sorted(glob.glob(os.path.join(folder, "member_*", "model")))
  if len(members) < 2:
    raise ValueError(f"dpo.reward_ensemble {folder}: needs >= 2 trained members (member_*/model), found "
                     f"{len(members)}; train them with `python -m llm reward reward.ensemble_size=k`")
  return members


def ensemble_uncertainty(model_section, folders, arrays, batch_size, mesh):
  """{"gamma_chosen", "gamma_rejected"} [N]: the ensemble's disagreement about r(x, y) (Section 5.1's
  ensemble uncertainty, Coste et al. 2023), member_disagreement of the members' rewards."""
  scores = []
  for folder in folders:
    member, _ = load_model(model_section, mesh, path=folder)
    scores.append(distributed.map_batches(lambda b: pair_rewards(member, b), arrays, batch_size,
                                          sharding.batch_sharding(mesh)))
  return member_disagreement(np.stack([s[0] for s in scores]), np.stack([s[1] for s in scores]))


def member_disagreement(chosen, rejected):
  """Gamma of every pair's responses from the members' rewards chosen, rejected [k, N]: the standard
  deviation over members (ddof 1) after centring each member by its mean reward over all 2N responses.

  Bradley-Terry fixes a reward model only up to an additive shift (the loss sees differences), so each
  member's shift is arbitrary (its head's initialization); uncentred, those shifts would dominate Gamma
  and enter every response alike. Centring per member over the dataset removes the shifts and keeps the
  members' disagreement about which responses are better. (Centring per pair instead would make
  Gamma(x, a_w) = Gamma(x, a_l) and the pessimistic margin vanish.)"""
  offsets = (chosen.mean(1, keepdims=True) + rejected.mean(1, keepdims=True)) / 2
  return {"gamma_chosen": (chosen - offsets).std(0, ddof=1), "gamma_rejected": (rejected - offsets).std(0, ddof=1)}


def cache_key(what, arrays, folders, model_section):
  """The key of the computation `what` over the token arrays with the models in `folders` (their contents)
  loaded with model_section's dtypes: a changed dataset, config.json, weight file or dtype gives another key."""
  h = hashlib.sha256(what.encode())
  for name in sorted(arrays):
    h.update(name.encode())
    h.update(np.ascontiguousarray(arrays[name]).tobytes())
  h.update(manifest.value_fingerprint({"models": [manifest.path_fingerprint(f) for f in folders],
                                       "param_dtype": model_section.param_dtype,
                                       "compute_dtype": compute_dtype(model_section)}).encode())
  return h.hexdigest()


def cached_arrays(path, key, compute):
  """The arrays saved at `path` (npz) when their fingerprint is `key`, else compute(), saved atomically by
  process 0. This is how reference log-probs and ensemble uncertainties are computed once per dataset."""
  if os.path.exists(path):
    try:
      with np.load(path) as f:
        if str(f["fingerprint"]) == key:
          return {k: f[k] for k in f.files if k != "fingerprint"}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
      pass  # a truncated or corrupt cache is recomputed and rewritten
  arrays = compute()
  if distributed.is_main_process():
    buffer = io.BytesIO()
    np.savez(buffer, fingerprint=key, **arrays)
    atomic.write_bytes(path, buffer.getvalue())
  return arrays


# ---------------------------------------------------------------- outputs and manifests

SECTIONS = {"sft": ("model", "data", "train"), "reward": ("model", "data", "train", "reward"),
            "dpo": ("model", "data", "train", "dpo")}
INPUT_KEYS = ("model.path", "model.tokenizer", "data.train", "data.eval", "dpo.reference", "dpo.reward_ensemble")
# Settings that do not change the trained parameters (logging, checkpoint cadence, placement).
NOT_RESULTS = ("train.progress", "train.tensorboard", "train.wandb", "train.wandb_project", "train.log_every",
               "train.save_every", "train.keep_checkpoints", "train.mesh", "train.eval_every")
RUN_OUTPUTS = ("checkpoints", "model", "adapter", "snapshots", "tensorboard", "wandb", "metrics.jsonl", "summary.json",
               "member_*", "reference_logprobs_*.npz", "uncertainty_*.npz", "manifest.json")


def run_manifest(config, command, *, ensemble=()):
  """The manifest of a trainer run (llm.training.manifest.make): the keys of the command's sections that
  determine the result, and the contents of its model folders and data files (by config key)."""
  sections = SECTIONS[command]
  settings = {key: value for key, value in flatten(to_dict(config))
              if key.split(".")[0] in sections and key not in NOT_RESULTS and key not in INPUT_KEYS}
  paths = {key: get_key(config, key) for key in INPUT_KEYS if key.split(".")[0] in sections}
  paths.pop("dpo.reward_ensemble", None)
  values = {"dpo.reward_ensemble": [manifest.path_fingerprint(m) for m in ensemble]} if ensemble else {}
  return manifest.make(settings, paths=paths, values=values)


def claim_run(config, command, **kwargs):
  """True when config.output_dir holds a finished run made with this config's manifest (reuse it); False
  when the run is to be made or resumed (its manifest is recorded first). Raises a one-line ValueError when
  the folder holds a run made otherwise and config.on_change is "stop" (llm.training.manifest.claim)."""
  out = require_writable("output_dir", config.output_dir, folder=True)
  require_file("model.path", config.model.path, folder=True)  # named as missing, not as "changed"
  require_file("data.train", config.data.train)
  started = any(glob.glob(os.path.join(out, name)) for name in RUN_OUTPUTS if name != "manifest.json")
  return manifest.claim(os.path.join(out, "manifest.json"), run_manifest(config, command, **kwargs),
                        name=f"output_dir {out}", done=finished(out), started=started, on_change=config.on_change,
                        clear=lambda: clear_run(out), resumable=True)


def clear_run(out):
  """Deletes what a trainer wrote into `out` (RUN_OUTPUTS), nothing else."""
  for pattern in RUN_OUTPUTS:
    for path in glob.glob(os.path.join(out, pattern)):
      shutil.rmtree(path) if os.path.isdir(path) else os.unlink(path)


def finished(out_dir):
  """Whether a run in out_dir completed: summary.json is written last, after the model."""
  return os.path.exists(os.path.join(out_dir, "summary.json"))


def read_summary(out_dir):
  with open(os.path.join(out_dir, "summary.json")) as f:
    return json.load(f)


def save_model_folder(model, tokenizer, path):
  """Writes `model` with `tokenizer` as the HF folder `path` from process 0 (params are gathered from all
  processes first); every process returns once it is written."""
  if jax.process_count() > 1:
    params = nnx.state(model, nnx.Param)
    nnx.update(model, jax.tree.map(lambda x: jnp.asarray(multihost_utils.process_allgather(x, tiled=True)), params))
  if distributed.is_main_process():
    hf_io.save_hf_checkpoint(model, path)
    tokenizer.save_pretrained(path)
  multihost_utils.sync_global_devices(f"save {path}")


def export(model, tokenizer, out_dir, summary, model_section):
  """Writes out_dir/model (HF folder + tokenizer; adapters merged), with LoRA out_dir/adapter (PEFT), and
  out_dir/summary.json from process 0."""
  save_model_folder(model, tokenizer, os.path.join(out_dir, "model"))
  if distributed.is_main_process():
    if lora.has_adapters(model):
      hf_io.save_peft_adapter(model, os.path.join(out_dir, "adapter"), alpha=model_section.lora_alpha,
                              targets=lora_targets(model_section), rslora=model_section.lora_rslora,
                              base_model=model_section.path)
    summary = {**summary, "manifest": manifest.read(os.path.join(out_dir, "manifest.json"))}
    atomic.write_text(os.path.join(out_dir, "summary.json"), json.dumps(summary, indent=2, default=float))
  multihost_utils.sync_global_devices(f"export {out_dir}")
  return summary


def snapshot_exporter(model, tokenizer, config, out_dir):
  """The on_step of llm.training.loop.train that exports train.snapshots evenly spaced policies, at steps
  ceil(k * steps / n) for k = 1..n, as HF folders out_dir/snapshots/step_N, for reward-KL curves along
  training (None when train.snapshots is 0)."""
  n = config.train.snapshots
  if not n:
    return None

  def on_step(step, steps, params):
    if step in {math.ceil(k * steps / n) for k in range(1, n + 1)}:
      nnx.update(model, params)
      save_model_folder(model, tokenizer, os.path.join(out_dir, "snapshots", f"step_{step}"))

  return on_step


def snapshots(out_dir):
  """[(step, folder)] of the snapshots of the run in out_dir, by step."""
  folder = os.path.join(out_dir, "snapshots")
  names = os.listdir(folder) if os.path.isdir(folder) else []
  steps = sorted(int(n[5:]) for n in names if n.startswith("step_") and n[5:].isdigit())
  return [(s, os.path.join(folder, f"step_{s}")) for s in steps]


def make_mesh(config):
  return sharding.make_mesh(config.train.mesh)


# ---------------------------------------------------------------- run_* (one per CLI command)


def run_sft(config):
  """SFT of model.path on data.train's responses (prompt masked); Table 8's SFT-RLHF defaults."""
  out = config.output_dir
  if claim_run(config, "sft"):
    return read_summary(out)
  mesh = make_mesh(config)
  model, tokenizer = load_model(config.model, mesh)
  model = with_adapters(model, config.model, config.train.seed)
  arrays, counts = sft_arrays(config, tokenizer, require_file("data.train", config.data.train))
  eval_arrays, _ = eval_arrays_of(config, tokenizer, sft_arrays)
  metrics = train(model, sft_loss, arrays, config.train, out, eval_arrays=eval_arrays, mesh=mesh, description="sft",
                  on_step=snapshot_exporter(model, tokenizer, config, out))
  return export(model, tokenizer, out, {"command": "sft", "data": counts, "metrics": metrics, "config": to_dict(config)},
                config.model)


def run_reward(config):
  """Bradley-Terry reward model(s) from model.path with a new scalar head, on data.train's pairs. With
  reward.ensemble_size = k, k members (head init and data order from seed + i) in output_dir/member_i/."""
  out = config.output_dir
  if claim_run(config, "reward"):
    return read_summary(out)
  mesh = make_mesh(config)
  k = config.reward.ensemble_size
  members = []
  for i in range(k):
    member_dir = os.path.join(out, f"member_{i}") if k > 1 else out
    if k > 1 and finished(member_dir):
      members.append(read_summary(member_dir))
      continue
    seed = config.train.seed + i
    model, tokenizer = load_model(config.model, mesh, num_labels=1, new_head_seed=seed)
    model = with_adapters(model, config.model, seed)
    arrays, counts = preference_arrays(config, tokenizer, require_file("data.train", config.data.train))
    eval_arrays, _ = eval_arrays_of(config, tokenizer, preference_arrays)
    train_config = dataclasses.replace(config.train, seed=seed)
    metrics = train(model, reward_model_loss, arrays, train_config, member_dir, eval_arrays=eval_arrays, mesh=mesh,
                    description=f"reward {i + 1}/{k}" if k > 1 else "reward")
    summary = {"command": "reward", "member": i, "data": counts, "metrics": metrics, "config": to_dict(config)}
    members.append(export(model, tokenizer, member_dir, summary, config.model))
  if k == 1:
    return members[0]
  summary = {"command": "reward", "ensemble_size": k, "members": members}
  if distributed.is_main_process():
    atomic.write_text(os.path.join(out, "summary.json"), json.dumps(summary, indent=2, default=float))
  return summary


def run_dpo(config):
  """DPO (or any loss of dpo.loss) of model.path on data.train's pairs against the reference dpo.reference
  (default: model.path), whose log-probs are computed once and cached in output_dir/reference_logprobs.npz
  (not at all for reference-free losses). With
  dpo.uncertainty_coef > 0: pessimistic DPO (Eq. 10) with the reward ensemble's uncertainty margin."""
  out = config.output_dir
  if config.dpo.reference:
    require_file("dpo.reference", config.dpo.reference, folder=True)
  folders = []
  if config.dpo.uncertainty_coef:
    folders = ensemble_members(require_file("dpo.reward_ensemble", config.dpo.reward_ensemble, folder=True))
  if claim_run(config, "dpo", ensemble=folders):
    return read_summary(out)
  mesh = make_mesh(config)
  model, tokenizer = load_model(config.model, mesh)
  model = with_adapters(model, config.model, config.train.seed)
  micro = config.train.batch_size // config.train.grad_accum
  policy_path = os.path.abspath(config.model.path)
  reference_path = os.path.abspath(config.dpo.reference or config.model.path)
  sets, loaded = {}, {}
  for split in ("train", "eval") if config.data.eval else ("train",):
    arrays, counts = preference_arrays(config, tokenizer, require_file(f"data.{split}", getattr(config.data, split)))

    def reference(arrays=arrays):
      if "model" not in loaded:  # pi0 is loaded at most once, and only when a cache is missing
        if reference_path == policy_path:  # the policy itself; with LoRA its base (adapters off, no copy)
          loaded["model"] = lora.without_adapters(model)
        else:
          loaded["model"] = load_model(config.model, mesh, path=reference_path, key="dpo.reference")[0]
      return reference_logprobs(loaded["model"], arrays, micro, mesh)

    if uses_reference(config.dpo):
      key = cache_key("reference log-probs", arrays, [reference_path], config.model)
      arrays = {**arrays, **cached_arrays(os.path.join(out, f"reference_logprobs_{split}.npz"), key, reference)}
    else:  # SFT / SimPO / ORPO alone: the rewards it reports are then beta * log pi, as TRL's CPO and ORPO
      zeros = np.zeros(len(arrays["chosen_ids"]), np.float32)
      arrays = {**arrays, "ref_chosen": zeros, "ref_rejected": zeros}
    if config.dpo.uncertainty_coef:
      key = cache_key("member_disagreement (centred per member)", arrays, folders, config.model)
      arrays.update(cached_arrays(os.path.join(out, f"uncertainty_{split}.npz"), key,
                                  lambda arrays=arrays: ensemble_uncertainty(config.model, folders, arrays, micro, mesh)))
    sets[split] = (arrays, counts)
  arrays, counts = sets["train"]
  metrics = train(model, make_dpo_loss(config.dpo), arrays, config.train, out,
                  eval_arrays=sets.get("eval", (None,))[0], mesh=mesh, description=config.dpo.loss,
                  on_step=snapshot_exporter(model, tokenizer, config, out))
  return export(model, tokenizer, out, {"command": "dpo", "data": counts, "metrics": metrics, "config": to_dict(config)},
                config.model)
