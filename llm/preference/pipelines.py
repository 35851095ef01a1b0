"""The paper's practical algorithms (Section 5, Appendix H) as pipelines of trainer stages.

Common inputs (an llm.training.config.Config): pi0 = model.path, D_off = data.train (preference pairs), the gold
preference oracle = oracle.*, and pipeline.* (Table 8's values by default). Each stage writes into its own
folder under output_dir with a manifest of the settings and inputs that made it (llm.training.manifest):
samples and labelled pairs are JSONL files written atomically, trainers resume from their checkpoints. A
rerun reuses a finished stage only when its manifest matches, so a pipeline rerun after an interruption
redoes nothing that was finished, and one with other settings stops at the first stage they change
(or, with on_change=overwrite, makes that stage and the ones downstream again).

  run_rso:           proxy reward model on D_off; K candidates per prompt from pi0; RSO pairs
                     (gshf_jax.rso_pairs, coefficient pipeline.rso_coefficient); DPO / hinge on them.
  run_multistep_rso: the same along the KL path pipeline.multistep_etas (0.5 -> 0.3 -> 0.1), a share of
                     the prompts per step, each step sampling from and training from the previous policy.
  run_hybrid:        hybrid GSHF-DPO (Algorithm 2, Option I, as in Appendix H): T iterations; iteration 1
                     is DPO on a subset of D_off; later ones label pairs (current policy, enhancer) with
                     the oracle and train DPO from pi0 on all data so far. The oracle budget is |D_off|.
  run_online:        online GSHF-DPO: the same with no D_off (iteration 1 labels pairs of pi0 samples).
  run_best_of_n:     best-of-n sampling from pi0 by the proxy reward (an inference-time baseline).
"""

import os

import jax
import numpy as np

from gshf_jax import rejection
from llm.inference import tokenizer as tok
from llm.preference import oracle, stages
from llm.training import data, manifest, trainers
from llm.training.config import require_file, with_overrides


def stage_dir(config, *parts):
  return os.path.join(config.output_dir, *parts)


def pipeline_tokenizer(config):
  return tok.load_tokenizer(config.model.tokenizer or require_file("model.path", config.model.path, folder=True))


def offline_pairs(config):
  """D_off as (prompt, chosen, rejected) triples, filtered as the trainers filter them (Appendix H: no
  identical responses, no prompt over data.max_prompt_length tokens), so every pair counted is trained on."""
  path = require_file("data.train", config.data.train)
  examples, _ = data.load_examples(path, "preferences", skip_malformed=config.data.skip_malformed)
  return data.filter_preferences(examples, pipeline_tokenizer(config), config.data.max_prompt_length)[0]


def training_prompts(config, offline=None):
  """pipeline.prompts (those within data.max_prompt_length tokens), or the distinct prompts of D_off in order
  (`offline`: offline_pairs(config) when the caller already has it)."""
  if config.pipeline.prompts:
    prompts, _ = data.load_examples(require_file("pipeline.prompts", config.pipeline.prompts), "prompts")
    return data.filter_prompts(prompts, pipeline_tokenizer(config), config.data.max_prompt_length)[0]
  return list(dict.fromkeys(p for p, _, _ in (offline_pairs(config) if offline is None else offline)))


def sample_responses(config, policy, prompts, path, *, num_samples, temperature=None, seed=0):
  """num_samples responses per prompt from the policy folder, cached in `path` ({prompt, responses, stopped})."""
  p = config.pipeline
  settings = {"num_samples": num_samples, "temperature": p.temperature if temperature is None else temperature,
              "seed": seed, "max_new_tokens": p.max_new_tokens, "batch_size": p.batch_size,
              "max_prompt_length": config.data.max_prompt_length, "param_dtype": config.model.param_dtype,
              "compute_dtype": config.model.compute_dtype}
  if manifest.claim_file(path, settings, on_change=config.on_change,
                         paths={"policy": policy, "tokenizer": config.model.tokenizer}, values={"prompts": prompts}):
    return data.read_rows(path)
  return stages.sample_to_file(config.model, policy, prompts, path, jax.random.key(seed), num_samples=num_samples,
                               max_new_tokens=p.max_new_tokens, temperature=settings["temperature"],
                               batch_size=p.batch_size, max_prompt_length=config.data.max_prompt_length)


def proxy_reward_model(config, pairs=None, out=None):
  """The proxy reward model folder: pipeline.proxy_reward, or a BT reward model trained from pi0 (Table 9's
  settings) on the preference file `pairs` (default D_off) in `out` (default output_dir/proxy_reward)."""
  if config.pipeline.proxy_reward:
    return require_file("pipeline.proxy_reward", config.pipeline.proxy_reward, folder=True)
  out = out or stage_dir(config, "proxy_reward")
  trainers.run_reward(with_overrides(config, {"output_dir": out, "reward.ensemble_size": 1,
                                              "data.train": pairs or config.data.train,
                                              "train.learning_rate": config.pipeline.reward_learning_rate}))
  return os.path.join(out, "model")


def candidates_stage(config, policy, prompts, path, settings, *, n, seed, proxy):
  """The inputs of a stage that picks from n samples per prompt of `policy` by the proxy reward model
  folder `proxy`: the samples (cached in PATH.candidates.jsonl). Returns (rows, whether `path` exists and
  was made from them with `settings`)."""
  rows = sample_responses(config, policy, prompts, path + ".candidates.jsonl", num_samples=n, seed=seed)
  reuse = manifest.claim_file(path, settings, on_change=config.on_change,
                              paths={"candidates": path + ".candidates.jsonl", "proxy_reward": proxy})
  return rows, reuse


def proxy_rewards(config, proxy, prompts, rows):
  """The proxy reward model's scores [P, n] of every response of `rows` (the sample rows of `prompts`) and
  whether each response stopped [P, n]."""
  judge = oracle.reward_model_oracle(proxy, batch_size=config.pipeline.batch_size)
  rewards = judge.rewards([x for x, r in zip(prompts, rows) for _ in r["responses"]],
                          [y for r in rows for y in r["responses"]])
  stopped = np.array([[done for _, done in stages.responses(r)] for r in rows], bool)
  return rewards.reshape(len(rows), -1), stopped


def rso_dataset(config, policy, prompts, coefficient, path, *, seed):
  """Appendix H's rejection-sampling pairs: pipeline.candidates samples per prompt from `policy`, scored
  by the proxy reward model, pipeline.accepted / 2 pairs per prompt by gshf_jax.rso_pairs (Algorithm 1
  of Liu et al. 2023 with coefficient beta = `coefficient`; the higher proxy reward is chosen). Candidates
  cut at max_new_tokens are never accepted; a prompt with too few finished candidates gives fewer pairs."""
  p = config.pipeline
  settings = {"coefficient": coefficient, "accepted": p.accepted, "seed": seed}
  proxy = proxy_reward_model(config)
  rows, reuse = candidates_stage(config, policy, prompts, path, settings, n=p.candidates, seed=seed, proxy=proxy)
  if reuse:
    return path
  rewards, stopped = proxy_rewards(config, proxy, prompts, rows)
  keys = jax.random.split(jax.random.key(seed), len(rows))
  pick = jax.jit(jax.vmap(lambda k, r, v: rejection.rso_pairs(k, r, coefficient, p.accepted // 2, v)))
  chosen, rejected = map(np.asarray, pick(keys, rewards, stopped))
  pairs = [data.preference_row(x, r["responses"][c], r["responses"][j])
           for x, r, cs, js in zip(prompts, rows, chosen, rejected) for c, j in zip(cs, js) if min(c, j) >= 0]
  data.write_jsonl(path, pairs)
  return path


def label_with_oracle(config, prompts, a, b, path, *, seed):
  """Pairs (a[i], b[i]) of (text, stopped) responses labelled by the gold oracle (oracle.labels: BT samples
  or argmax), cached in `path`; pairs that no trainer would use (stages.trainable_pairs) are not sent to the
  oracle. Returns the number of labelled pairs and {"truncated": n, "identical": n} dropped."""
  o = config.oracle
  prompts, a, b, dropped = stages.trainable_pairs(prompts, a, b)
  settings = {"kind": o.kind, "function": o.function, "labels": o.labels, "seed": seed}
  if not manifest.claim_file(path, settings, on_change=config.on_change, paths={"oracle.path": o.path},
                             values={"prompts": prompts, "a": a, "b": b}):
    stages.label_to_file(o, prompts, a, b, path, seed=seed)
  return len(prompts), dropped


def dpo_stage(config, out, train_file, **overrides):
  """run_dpo into `out` on `train_file` (pairs), pi0 as policy and reference unless overridden."""
  settings = {"output_dir": out, "data.train": train_file, "dpo.reference": config.dpo.reference or config.model.path,
              **overrides}
  trainers.run_dpo(with_overrides(config, settings))
  return os.path.join(out, "model")


def run_rso(config):
  """RSO: DPO (or dpo.loss=hinge) from pi0 on rejection-sampled pairs of pi0's candidates. Returns
  {"policy": folder, "pairs": file}."""
  prompts = training_prompts(config)
  pairs = rso_dataset(config, config.model.path, prompts, config.pipeline.rso_coefficient,
                      stage_dir(config, "rso", "pairs.jsonl"), seed=config.train.seed)
  return {"policy": dpo_stage(config, stage_dir(config, "rso", "dpo"), pairs), "pairs": pairs}


def run_multistep_rso(config):
  """Multi-step RSO along eta_1 > ... > eta_N (pipeline.multistep_etas): step i takes the i-th share of
  the prompts, rejection-samples pairs from the previous step's policy with coefficient
  pipeline.multistep_coefficient, and trains DPO with KL coefficient eta_i from that policy (reference
  pi0). Returns {"policy": the last step's folder, "steps": [folders]}."""
  prompts = training_prompts(config)
  etas = config.pipeline.multistep_etas
  shares = np.array_split(np.arange(len(prompts)), len(etas))
  policy, steps = config.model.path, []
  for i, (eta, share) in enumerate(zip(etas, shares)):
    out = stage_dir(config, "multistep_rso", f"step_{i + 1}")
    pairs = rso_dataset(config, policy, [prompts[j] for j in share], config.pipeline.multistep_coefficient,
                        os.path.join(out, "pairs.jsonl"), seed=config.train.seed + i)
    policy = dpo_stage(config, os.path.join(out, "dpo"), pairs, **{"model.path": policy, "dpo.beta": eta})
    steps.append(policy)
  return {"policy": policy, "steps": steps}


def enhancer_responses(config, policy, prompts, path, *, seed, proxy=None):
  """One (text, stopped) response per prompt from the enhancer: pi0 ("reference"), the best of
  pipeline.enhancer_n samples of the current policy by the proxy reward model folder `proxy`
  ("best_of_n"), or the current policy at pipeline.enhancer_temperature ("temperature")."""
  p = config.pipeline
  if p.enhancer == "reference":
    rows = sample_responses(config, config.model.path, prompts, path, num_samples=1, seed=seed)
  elif p.enhancer == "temperature":
    rows = sample_responses(config, policy, prompts, path, num_samples=1, temperature=p.enhancer_temperature, seed=seed)
  else:
    rows = best_of_n_responses(config, policy, prompts, path, n=p.enhancer_n, seed=seed, proxy=proxy)
  return [stages.responses(r)[0] for r in rows]


def best_of_n_responses(config, policy, prompts, path, *, n, seed, proxy):
  """The best of n samples per prompt by the proxy reward model folder `proxy` (among the samples that
  stopped, when any did), cached in `path` ({prompt, responses: [best], stopped: [bool]})."""
  rows, reuse = candidates_stage(config, policy, prompts, path, {"n": n, "seed": seed}, n=n, seed=seed, proxy=proxy)
  if reuse:
    return data.read_rows(path)
  rewards, stopped = proxy_rewards(config, proxy, prompts, rows)
  eligible = np.where(stopped.any(1, keepdims=True), stopped, True)
  pick = np.where(eligible, rewards, -np.inf).argmax(1)
  best = [{"prompt": tok.as_json(x), "responses": [r["responses"][i]], "stopped": [bool(done[i])]}
          for x, r, i, done in zip(prompts, rows, pick, stopped)]
  data.write_jsonl(path, best)
  return best


def run_hybrid(config, *, online=False):
  """Hybrid (or, with online=True, online) GSHF-DPO. Iteration 1: DPO from pi0 on the first m pairs of
  D_off (online: m pairs of two pi0 samples labelled by the oracle); iteration t >= 2: on the next m
  prompts, one response of the current policy and one of the enhancer, labelled by the oracle; DPO from
  pi0 on all pairs so far. m = pipeline.queries_per_iteration or |D_off| / T with D_off as the trainers
  filter it, so the oracle budget equals the offline methods'. Pairs with a truncated or duplicate response
  are not labelled (stages.trainable_pairs), so "queries" counts exactly the labels trained on. The
  best-of-n enhancer's proxy reward model is trained on iteration 1's pairs, labels already counted
  (pipeline.proxy_reward, trained elsewhere, is reported as labels outside the budget).
  Returns {"policy", "iterations": [folders], "queries", "budget", "dropped", "proxy_labels"}."""
  p = config.pipeline
  name = "online" if online else "hybrid"
  offline = offline_pairs(config) if config.data.train else None
  prompts = training_prompts(config, offline)
  m = p.queries_per_iteration or (len(offline) if offline is not None else len(prompts)) // p.iterations
  if m * p.iterations > len(prompts):
    raise ValueError(f"{name}: {p.iterations} iterations of {m} queries need more prompts than the {len(prompts)} "
                     "available (set pipeline.prompts or pipeline.queries_per_iteration)")
  files, policy, iterations, proxy = [], config.model.path, [], None
  queries, dropped = 0, {"truncated": 0, "identical": 0}
  for t in range(p.iterations):
    out = stage_dir(config, name, f"iteration_{t + 1}")
    path = os.path.join(out, "pairs.jsonl")
    seed = config.train.seed + 100 * t
    if t == 0 and not online:
      if not manifest.claim_file(path, {"pairs": m, "max_prompt_length": config.data.max_prompt_length},
                                 on_change=config.on_change, paths={"data.train": config.data.train}):
        data.write_jsonl(path, [data.preference_row(*pair) for pair in offline[:m]])
      labelled, skipped = min(m, len(offline)), {}
    else:
      batch = prompts[t * m:(t + 1) * m]  # the t-th split of the prompts
      if t == 0:  # online: two responses of pi0
        rows = sample_responses(config, policy, batch, os.path.join(out, "samples.jsonl"), num_samples=2, seed=seed)
        a, b = [stages.responses(r)[0] for r in rows], [stages.responses(r)[1] for r in rows]
      else:
        rows = sample_responses(config, policy, batch, os.path.join(out, "policy_samples.jsonl"), num_samples=1,
                                seed=seed)
        a = [stages.responses(r)[0] for r in rows]
        if p.enhancer == "best_of_n" and proxy is None:
          proxy = proxy_reward_model(config, files[0], stage_dir(config, name, "enhancer_proxy"))
        b = enhancer_responses(config, policy, batch, os.path.join(out, "enhancer_samples.jsonl"), seed=seed + 1,
                               proxy=proxy)
      labelled, skipped = label_with_oracle(config, batch, a, b, path, seed=config.train.seed + t)
    queries += labelled
    dropped = {k: v + skipped.get(k, 0) for k, v in dropped.items()}
    files.append(path)
    merged = os.path.join(out, "all_pairs.jsonl")
    if not manifest.claim_file(merged, {}, on_change=config.on_change, paths={str(i): f for i, f in enumerate(files)}):
      data.write_jsonl(merged, [row for f in files for row in data.read_rows(f)])
    policy = dpo_stage(config, os.path.join(out, "dpo"), merged)
    iterations.append(policy)
  proxy_labels = None if proxy is None else "outside the budget" if p.proxy_reward else "iteration 1's pairs"
  return {"policy": policy, "iterations": iterations, "queries": queries, "budget": m * p.iterations,
          "dropped": dropped, "proxy_labels": proxy_labels}


def run_online(config):
  return run_hybrid(config, online=True)


def run_best_of_n(config):
  """Best-of-n of pi0 (n = pipeline.best_of_n) by the proxy reward on the evaluation prompts, scored by the
  gold oracle. Returns {"reward", "reward_se", "kl_bound" (log n - (n - 1) / n), "responses" file}."""
  from llm.preference.evaluate import mean_se
  prompts, _ = data.load_examples(require_file("evaluate.prompts", config.evaluate.prompts), "prompts")
  n = config.pipeline.best_of_n
  path = stage_dir(config, "best_of_n", "responses.jsonl")
  rows = best_of_n_responses(config, config.model.path, prompts, path, n=n, seed=config.train.seed,
                             proxy=proxy_reward_model(config))
  rewards = oracle.make_oracle(config.oracle).rewards(prompts, [r["responses"][0] for r in rows])
  reward, se = mean_se(rewards)
  return {"reward": reward, "reward_se": se, "kl_bound": rejection.best_of_n_kl_bound(n), "responses": path}
