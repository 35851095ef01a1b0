"""Run configuration: one tree of dataclasses, read from YAML and `key=value` overrides (MaxText style),
validated with errors that name the key.

    config = load_config("sft", "configs/paper_open_llama_3b.yaml", ["train.learning_rate=2e-5"])

Precedence: the dataclass defaults, then the command's defaults (COMMAND_DEFAULTS: the paper's Tables 8 and
9 for that trainer), then the YAML file, then the overrides. A YAML file may hold a `commands:` mapping
with a section per command (`commands: {sft: {train: {...}}, dpo: {...}}`, the same keys as the top
level) that applies only to that command.
"""

import dataclasses
import math
import os
import typing

import yaml

from gshf_jax.atomic import unwritable
from gshf_jax.losses import check_combined
from llm.models.config import ATTENTION, REMAT_POLICIES
from llm.training.manifest import ON_CHANGE

COMMANDS = ("sft", "reward", "dpo", "sample", "label", "evaluate", "rso", "multistep_rso", "hybrid", "online",
            "best_of_n")


@dataclasses.dataclass
class ModelSection:
  path: str = ""  # HF folder (config.json + safetensors) or a cached repo id: the policy / model to train
  tokenizer: str = ""  # tokenizer folder or cached repo id (default: path)
  param_dtype: str = "float32"  # storage dtype of the parameters: float32 | bfloat16
  compute_dtype: str = ""  # activation / matmul dtype (default: param_dtype); bf16 with f32 params is mixed precision
  remat: bool = False  # rematerialize each layer in the backward pass
  remat_policy: str = "nothing_saveable"  # what a rematerialized layer keeps (llm.models.config.REMAT_POLICIES)
  scan_layers: bool = False  # the layers as one stacked block under lax.scan: compile time independent of depth
  attention: str = "xla"  # xla | splash: the Pallas TPU kernel in training and scoring (llm.models.splash)
  # LoRA (llm.models.lora): > 0 trains rank-r adapters of the lora_targets projections instead of every
  # parameter; exported merged (model/) and as a PEFT adapter folder (adapter/)
  lora_rank: int = 0
  lora_alpha: float = 16.0  # the adapters' scale is lora_alpha / lora_rank (PEFT's lora_alpha)
  lora_targets: str = ""  # comma-separated HF module names (PEFT's target_modules) or all-linear; "": family default
  lora_rslora: bool = False  # scale lora_alpha / sqrt(lora_rank) (rsLoRA, PEFT's use_rslora)


@dataclasses.dataclass
class DataSection:
  # JSONL: {prompt, chosen, rejected} (text or messages), HH-RLHF {chosen, rejected}, {prompt, response}; or the
  # same rows in a .json or .parquet file or a datasets save_to_disk folder (the `data` extra)
  train: str = ""
  eval: str = ""  # the same format, for the eval loss (optional)
  max_prompt_length: int = 400  # tokens; longer prompts are dropped (Appendix H)
  max_response_length: int = 400  # tokens; longer responses are truncated
  skip_malformed: bool = False  # skip (and count) malformed lines instead of failing
  pad_to_max_length: bool = False  # pad every dataset to max_prompt/response_length (one shape for all runs)


@dataclasses.dataclass
class TrainSection:
  learning_rate: float = 1e-6
  warmup_ratio: float = 0.03  # cosine decay with linear warm-up over this share of the steps
  epochs: int = 1
  max_steps: int = 0  # > 0: stop after this many optimizer steps (overrides epochs)
  batch_size: int = 32  # global: examples per optimizer step, over all devices and processes
  grad_accum: int = 1  # micro-batches per step (batch_size must be a multiple)
  max_grad_norm: float = 1.0  # global-norm clipping (0: none)
  weight_decay: float = 0.0
  eval_every: int = 0  # steps between evaluations of the eval loss (0: only at the end)
  save_every: int = 100  # steps between checkpoints
  log_every: int = 10
  keep_checkpoints: int = 2
  snapshots: int = 0  # > 0: also export this many evenly spaced policies (the last at the end) as HF folders
  seed: int = 0
  mesh: dict = dataclasses.field(default_factory=lambda: {"data": -1})  # axes data / fsdp / tensor
  tensorboard: bool = True
  wandb: str = ""  # "": no W&B; offline (written to output_dir/wandb, no network) | online (needs the wandb extra)
  wandb_project: str = "gshf-jax"
  progress: bool = True


@dataclasses.dataclass
class DPOSection:
  # a name in gshf_jax.losses.PAIRWISE_LOSSES (dpo: Eq. 9, hinge: RSO, TRL's loss_type names, simpo, orpo),
  # or several, comma-separated, trained on the weighted sum of their batch means (TRL's loss_weights)
  loss: str = "dpo"
  loss_weights: list = dataclasses.field(default_factory=list)  # one per loss (empty: all 1)
  beta: float = 0.1  # KL coefficient of the DPO objective (eta in the paper)
  label_smoothing: float = 0.0
  reference: str = ""  # pi0's HF folder (default: model.path)
  uncertainty_coef: float = 0.0  # > 0: pessimistic DPO, Eq. (10), margin = coef * (Gamma_w - Gamma_l)
  reward_ensemble: str = ""  # output folder of `reward` with ensemble_size >= 2 (gives Gamma)
  ipo_per_token: bool = False  # ipo: TRL's form, log-ratios averaged over tokens (default: the paper's sums)
  discopop_tau: float = 0.05  # discopop: the temperature of its blend
  simpo_gamma: float = 0.5  # simpo: the target reward margin


def lora_targets(section):
  """The target module names of a ModelSection's comma-separated lora_targets (() for the family's default)."""
  return tuple(name.strip() for name in section.lora_targets.split(",") if name.strip())


def loss_names(section):
  """The loss names of a DPOSection's comma-separated `loss`."""
  return [name.strip() for name in section.loss.split(",")]


def loss_options(section):
  """The losses' own options of a DPOSection, as gshf_jax.losses takes them."""
  return {"per_token": section.ipo_per_token, "tau": section.discopop_tau, "gamma": section.simpo_gamma}


@dataclasses.dataclass
class RewardSection:
  ensemble_size: int = 1  # independently initialized reward models (Section 5.1's ensemble)


@dataclasses.dataclass
class OracleSection:
  kind: str = "reward_model"  # reward_model | callable | dataset
  path: str = ""  # reward_model: HF folder (ours or *ForSequenceClassification); dataset: labelled JSONL
  function: str = ""  # callable: "module:function" taking (prompts, responses) -> rewards
  labels: str = "bt"  # bt: Bradley-Terry sample from the gold reward (Eq. 1) | argmax: the higher reward
  batch_size: int = 32


@dataclasses.dataclass
class SampleSection:
  prompts: str = ""  # JSONL with a prompt per line ({prompt}: text or messages, or HH-RLHF dialogues)
  output: str = ""  # JSONL written: {prompt, responses}
  num_samples: int = 2
  max_new_tokens: int = 400  # Table 9
  temperature: float = 1.0
  top_k: int = 0
  top_p: float = 1.0
  batch_size: int = 32


@dataclasses.dataclass
class LabelSection:
  input: str = ""  # JSONL {prompt, responses: [a, b, ...]} (from `sample`) or {prompt, response_a, response_b}
  output: str = ""  # JSONL written: {prompt, chosen, rejected}


@dataclasses.dataclass
class EvaluateSection:
  prompts: str = ""  # held-out prompts (JSONL)
  ood_prompts: str = ""  # an out-of-distribution prompt set (optional)
  reference: str = ""  # pi0's folder for KL(pi || pi0) (default: dpo.reference, then model.path)
  baseline: str = ""  # a policy folder for head-to-head win rates (optional)
  num_prompts: int = 0  # 0: all
  temperatures: list = dataclasses.field(default_factory=lambda: [1.0])  # Figure 5's sweep; KL at 1.0
  max_new_tokens: int = 400
  batch_size: int = 32
  tie_tolerance: float = 0.0  # |reward difference| <= this counts as a tie


@dataclasses.dataclass
class PipelineSection:
  """The paper's pipelines (llm.preference.pipelines): D_off is data.train, pi0 is model.path, the gold oracle is
  oracle.*; Table 8's values as defaults."""
  prompts: str = ""  # training prompts (JSONL) for sampling; default: D_off's prompts
  candidates: int = 8  # RSO: K candidates per prompt (Table 8: candidates and accepted 8-2)
  accepted: int = 2  # RSO: accepted samples per prompt (accepted / 2 pairs)
  rso_coefficient: float = 0.5  # RSO rejection-sampling coefficient (Table 8)
  multistep_etas: list = dataclasses.field(default_factory=lambda: [0.5, 0.3, 0.1])  # Table 8's KL path
  multistep_coefficient: float = 3.0  # Table 8: multi-step RSO's rejection-sampling coefficient
  iterations: int = 3  # hybrid / online GSHF: T
  queries_per_iteration: int = 0  # oracle queries per iteration (0: |D_off| / T, the offline budget)
  enhancer: str = "reference"  # reference (pi0) | best_of_n (of the current policy) | temperature
  enhancer_n: int = 8
  enhancer_temperature: float = 0.7
  best_of_n: int = 8  # Table 8: best-of-n
  proxy_reward: str = ""  # a trained proxy reward model (RSO, best-of-n); default: trained on D_off
  reward_learning_rate: float = 5e-6  # the proxy reward model's (Table 9: RM training 3B)
  max_new_tokens: int = 400  # Table 9: data generation
  temperature: float = 1.0
  batch_size: int = 32  # prompts per sampling call


@dataclasses.dataclass
class DistributedSection:
  coordinator_address: str = ""  # host:port of process 0 (default: JAX_COORDINATOR_ADDRESS or auto)
  num_processes: int = 0  # 0: from the environment
  process_id: int = -1  # -1: from the environment


@dataclasses.dataclass
class Config:
  output_dir: str = "runs/llm"
  on_change: str = "stop"  # an existing stage made otherwise: stop | overwrite | resume (llm.training.manifest)
  model: ModelSection = dataclasses.field(default_factory=ModelSection)
  data: DataSection = dataclasses.field(default_factory=DataSection)
  train: TrainSection = dataclasses.field(default_factory=TrainSection)
  dpo: DPOSection = dataclasses.field(default_factory=DPOSection)
  reward: RewardSection = dataclasses.field(default_factory=RewardSection)
  oracle: OracleSection = dataclasses.field(default_factory=OracleSection)
  sample: SampleSection = dataclasses.field(default_factory=SampleSection)
  label: LabelSection = dataclasses.field(default_factory=LabelSection)
  evaluate: EvaluateSection = dataclasses.field(default_factory=EvaluateSection)
  pipeline: PipelineSection = dataclasses.field(default_factory=PipelineSection)
  distributed: DistributedSection = dataclasses.field(default_factory=DistributedSection)


# The paper's hyper-parameters per trainer (Table 8: SFT-RLHF and DPO; Table 9: RM training 3B).
COMMAND_DEFAULTS = {
    "sft": {"train.learning_rate": 1e-5, "train.batch_size": 12, "train.epochs": 2},
    "reward": {"train.learning_rate": 5e-6, "train.batch_size": 16, "train.epochs": 1},
    "dpo": {"train.learning_rate": 1e-6, "train.batch_size": 32, "train.epochs": 1, "dpo.beta": 0.1},
    "rso": {"train.learning_rate": 5e-6, "train.batch_size": 32, "train.epochs": 1},
    "multistep_rso": {"train.learning_rate": 1e-6, "train.batch_size": 32},
    "hybrid": {"train.learning_rate": 1e-6, "train.batch_size": 32},
    "online": {"train.learning_rate": 5e-7, "train.batch_size": 64},
}

CHOICES = {
    "model.param_dtype": ("float32", "bfloat16"), "model.compute_dtype": ("", "float32", "bfloat16"),
    "model.remat_policy": REMAT_POLICIES, "model.attention": ATTENTION,
    "oracle.kind": ("reward_model", "callable", "dataset"), "train.wandb": ("", "offline", "online"),
    "oracle.labels": ("bt", "argmax"), "pipeline.enhancer": ("reference", "best_of_n", "temperature"),
    "on_change": ON_CHANGE,
}
POSITIVE = ("model.lora_alpha", "data.max_prompt_length", "data.max_response_length", "train.learning_rate",
            "train.epochs", "train.batch_size", "train.grad_accum", "train.save_every", "train.log_every",
            "train.keep_checkpoints", "dpo.beta", "reward.ensemble_size", "oracle.batch_size",
            "sample.num_samples", "sample.max_new_tokens", "sample.batch_size", "evaluate.max_new_tokens",
            "evaluate.batch_size", "pipeline.candidates", "pipeline.accepted", "pipeline.rso_coefficient",
            "pipeline.multistep_coefficient", "pipeline.iterations", "pipeline.enhancer_n", "pipeline.reward_learning_rate",
            "pipeline.enhancer_temperature", "pipeline.best_of_n", "pipeline.max_new_tokens", "pipeline.temperature",
            "pipeline.batch_size")
NON_NEGATIVE = ("model.lora_rank", "train.warmup_ratio", "train.max_steps", "train.max_grad_norm", "train.weight_decay",
                "train.eval_every", "train.snapshots", "dpo.uncertainty_coef", "sample.temperature", "sample.top_k",
                "evaluate.num_prompts", "evaluate.tie_tolerance", "pipeline.queries_per_iteration")


def load_config(command, path=None, overrides=()):
  """The validated Config of `command` from the YAML file `path` (optional) and "a.b=value" overrides.

  Raises:
    ValueError: naming the file or override and the key, for unknown keys, wrong types, out-of-range values.
  """
  if command not in COMMANDS:
    raise ValueError(f"unknown command {command!r}; accepted: {', '.join(COMMANDS)}")
  config = Config()
  for key, value in COMMAND_DEFAULTS.get(command, {}).items():
    set_key(config, key, value, "defaults")
  if path:
    if not os.path.isfile(path):
      raise ValueError(f"--config {path}: no such file")
    with open(path) as f:
      try:
        tree = yaml.safe_load(f) or {}
      except yaml.YAMLError as e:
        raise ValueError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(tree, dict):
      raise ValueError(f"{path}: the top level must be a mapping of sections")
    per_command = tree.pop("commands", None) or {}
    unknown = sorted(set(per_command) - set(COMMANDS)) if isinstance(per_command, dict) else ["(not a mapping)"]
    if unknown:
      raise ValueError(f"{path}: commands: unknown commands {unknown}; accepted: {', '.join(COMMANDS)}")
    for source in (tree, per_command.get(command) or {}):
      for key, value in flatten(source):
        set_key(config, key, value, path)
  for item in overrides:
    key, sep, text = item.partition("=")
    if not sep:
      raise ValueError(f"override {item!r}: expected key=value (e.g. train.learning_rate=1e-5)")
    set_key(config, key.strip(), yaml.safe_load(text) if text.strip() else "", f"override {item!r}")
  resolve_cached_models(config)
  validate(config)
  frozen_base = config.model.lora_rank and command in ("sft", "dpo")  # trains float32 adapters only
  if command not in ("sample", "label", "evaluate") and config.model.param_dtype == "bfloat16" and not frozen_base:
    raise ValueError(f"{command} trains, and model.param_dtype=bfloat16 has no float32 master copy: AdamW "
                     "updates below bfloat16's resolution (2^-8 of a weight) are lost, so at DPO learning rates "
                     "most weights never move; train with model.param_dtype=float32 model.compute_dtype=bfloat16 "
                     "(or, for sft and dpo, LoRA adapters on a bfloat16 base: model.lora_rank > 0)")
  return config


def flatten(tree, prefix=""):
  """("a.b", value) pairs of a nested mapping; dict-valued fields (train.mesh) stay whole."""
  for key, value in tree.items():
    name = f"{prefix}{key}"
    if isinstance(value, dict) and value and name not in ("train.mesh",):
      yield from flatten(value, name + ".")
    else:
      yield name, value


def set_key(config, key, value, source):
  """Sets config.<key> (dotted) to `value` converted to the field's type; errors name `source`."""
  *sections, name = key.split(".")
  node = config
  for section in sections:
    if not hasattr(node, section) or not dataclasses.is_dataclass(getattr(node, section)):
      raise ValueError(f"{source}: unknown section {section!r} in {key!r}; accepted: {fields_of(node)}")
    node = getattr(node, section)
  if dataclasses.is_dataclass(getattr(node, name, None)):
    if value == {}:  # an empty section
      return
    raise ValueError(f"{source}: {key!r} is a section; set its keys ({fields_of(getattr(node, name))})")
  if key == "model.dtype":
    raise ValueError(f"{source}: {key!r} is ambiguous; set model.param_dtype (how parameters are stored) "
                     "and model.compute_dtype (activations and matmuls)")
  if name not in {f.name for f in dataclasses.fields(node)}:
    raise ValueError(f"{source}: unknown key {key!r}; accepted: {fields_of(node)}")
  kind = typing.get_type_hints(type(node))[name]
  setattr(node, name, convert(value, kind, key, source))


def convert(value, kind, key, source):
  if kind is bool:
    if isinstance(value, bool):
      return value
  elif kind is int:
    if isinstance(value, int) and not isinstance(value, bool):
      return value
  elif kind is float:
    if isinstance(value, str):  # YAML 1.1 reads "1e-5" (no dot) as a string
      try:
        value = float(value)
      except ValueError:
        pass
    if isinstance(value, (int, float)) and not isinstance(value, bool):
      return float(value)
  elif kind is str:
    if isinstance(value, str):
      return value
  elif kind is list:
    value = value if isinstance(value, list) else [value]
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
      return [float(v) for v in value]
  elif kind is dict:
    if isinstance(value, dict):
      return dict(value)
  raise ValueError(f"{source}: {key} must be {kind.__name__}, got {value!r}")


def fields_of(node):
  return ", ".join(f.name for f in dataclasses.fields(node))


def get_key(config, key):
  node = config
  for part in key.split("."):
    node = getattr(node, part)
  return node


def validate(config):
  """Range and choice checks (the per-command file checks happen where the files are opened)."""
  for key, value in flatten(to_dict(config)):
    numbers = value if isinstance(value, list) else [value]
    if any(isinstance(v, float) and not math.isfinite(v) for v in numbers):
      raise ValueError(f"{key} must be a finite number, got {value}")
  for key, choices in CHOICES.items():
    if get_key(config, key) not in choices:
      raise ValueError(f"{key} must be one of {[c for c in choices if c]}, got {get_key(config, key)!r}")
  for key in POSITIVE:
    if not get_key(config, key) > 0:
      raise ValueError(f"{key} must be > 0, got {get_key(config, key)}")
  for key in NON_NEGATIVE:
    if get_key(config, key) < 0:
      raise ValueError(f"{key} must be >= 0, got {get_key(config, key)}")
  train = config.train
  if train.batch_size % train.grad_accum:
    raise ValueError(f"train.batch_size ({train.batch_size}) must be a multiple of train.grad_accum "
                     f"({train.grad_accum})")
  if train.warmup_ratio >= 1:
    raise ValueError(f"train.warmup_ratio must be in [0, 1), got {train.warmup_ratio}")
  if not 0 <= config.dpo.label_smoothing <= 0.5:
    raise ValueError(f"dpo.label_smoothing must be in [0, 0.5], got {config.dpo.label_smoothing}")
  if not 0 < config.sample.top_p <= 1:
    raise ValueError(f"sample.top_p must be in (0, 1], got {config.sample.top_p}")
  if any(t < 0 for t in config.evaluate.temperatures):
    raise ValueError(f"evaluate.temperatures must be >= 0, got {config.evaluate.temperatures}")
  p = config.pipeline
  if p.accepted % 2 or p.accepted > p.candidates:
    raise ValueError(f"pipeline.accepted must be even and <= pipeline.candidates, got {p.accepted} of {p.candidates}")
  if not p.multistep_etas or any(eta <= 0 for eta in p.multistep_etas):
    raise ValueError(f"pipeline.multistep_etas must be positive, got {p.multistep_etas}")
  if any(isinstance(w, bool) or not isinstance(w, (int, float)) or w < 0 for w in config.dpo.loss_weights):
    raise ValueError(f"dpo.loss_weights must be numbers >= 0, got {config.dpo.loss_weights}")
  try:
    check_combined(loss_names(config.dpo), config.dpo.loss_weights or None, margin=config.dpo.uncertainty_coef > 0,
                   label_smoothing=config.dpo.label_smoothing, **loss_options(config.dpo))
  except ValueError as e:
    raise ValueError(f"dpo.loss={config.dpo.loss}: {e} (dpo.uncertainty_coef={config.dpo.uncertainty_coef}, "
                     f"dpo.label_smoothing={config.dpo.label_smoothing})") from None
  if config.dpo.uncertainty_coef > 0 and not config.dpo.reward_ensemble:
    raise ValueError("dpo.uncertainty_coef > 0 (pessimistic DPO, Eq. 10) needs dpo.reward_ensemble")
  if train.wandb:
    try:
      import wandb  # noqa: F401
    except ImportError:
      raise ValueError(f"train.wandb={train.wandb} needs the wandb package: pip install -e \".[wandb]\"") from None
  from llm.parallel import sharding
  unknown = sorted(set(train.mesh) - set(sharding.MESH_AXES))
  if unknown:
    raise ValueError(f"train.mesh: unknown axes {unknown}; accepted: {list(sharding.MESH_AXES)}")


# Keys that name a model or tokenizer folder: each may instead be a Hugging Face repo id in the local cache.
MODEL_FOLDERS = ("model.path", "model.tokenizer", "dpo.reference", "oracle.path", "evaluate.reference",
                 "evaluate.baseline", "pipeline.proxy_reward")


def resolve_cached_models(config):
  """Sets every MODEL_FOLDERS key that names no local path but a Hugging Face repo id ("org/name") whose
  snapshot is already in the local cache (HF_HUB_CACHE, as transformers finds it) to that snapshot's
  folder. Nothing is downloaded: an id that is not cached stays as it is and is reported missing where
  the folder is opened."""
  import huggingface_hub
  from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError
  for key in MODEL_FOLDERS:
    value = get_key(config, key)
    if not value or os.path.exists(value):
      continue
    try:
      folder = huggingface_hub.snapshot_download(value, local_files_only=True)
    except (HFValidationError, LocalEntryNotFoundError, ValueError):
      continue
    set_key(config, key, folder, key)


DATA_KEYS = ("data.train", "data.eval")  # a file, or a folder written by datasets' save_to_disk


def require_file(key, path, *, folder=False):
  """Raises a ValueError naming the config key when `path` is empty or does not exist."""
  if not path:
    raise ValueError(f"{key} is required (a {'folder' if folder else 'file'} path)")
  saved_dataset = key in DATA_KEYS and os.path.isdir(path)
  if not (saved_dataset or (os.path.isdir(path) if folder else os.path.isfile(path))):
    cache = " (nor a Hugging Face repo id in the local cache; nothing is downloaded)" if key in MODEL_FOLDERS else ""
    raise ValueError(f"{key}: {path}: no such {'folder' if folder else 'file'}{cache}")
  return path


def require_writable(key, path, *, folder=False):
  """Raises a ValueError naming the config key when `path` (a file to write, or with folder=True a folder
  to write into) cannot be written (gshf_jax.atomic.unwritable)."""
  problem = unwritable(path, folder=folder)
  if problem:
    raise ValueError(f"{key}: {problem}")
  return path


def to_dict(config):
  return dataclasses.asdict(config)


def with_overrides(config, overrides):
  """A validated copy of `config` with {"a.b": value} applied (how a pipeline configures its stages)."""
  import copy
  config = copy.deepcopy(config)
  for key, value in overrides.items():
    set_key(config, key, value, "pipeline stage")
  validate(config)
  return config
