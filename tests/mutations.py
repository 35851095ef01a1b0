"""Mutation check: does the default suite catch plausible one-line bugs?

Each mutation below replaces one line of the code in a temporary copy of the repository (git ls-files) and
runs the tests that should catch it; a mutation the tests still pass "survives". Run on demand (not in CI;
the list takes about 15 minutes on a 2-core CPU):

  python tests/mutations.py                # every mutation
  python tests/mutations.py top_p rso      # the mutations whose names contain these words

Prints one line per mutation (caught / SURVIVED, seconds) and exits 1 when any survives.
"""

import os
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PIPELINES = "tests/llm/test_pipelines.py"
RUNS = "tests/bandit_sim/test_experiment_runs.py"

# (name, file, the exact line text (unique in the file), its mutated text, pytest arguments)
MUTATIONS = [
    ("dpo margin flipped", "gshf_jax/losses.py",
     "return (jnp.asarray(pi_c) - ref_c) - (jnp.asarray(pi_r) - ref_r)",
     "return (jnp.asarray(pi_r) - ref_r) - (jnp.asarray(pi_c) - ref_c)", ["tests/gshf_jax"]),
    ("kl direction", "gshf_jax/gibbs.py", "def kl(logp: ArrayLike, logq: ArrayLike) -> jax.Array:",
     "def kl(logq: ArrayLike, logp: ArrayLike) -> jax.Array:", ["tests/gshf_jax"]),
    ("label shift", "llm/inference/logprobs.py", "targets = input_ids[:, 1:]", "targets = input_ids[:, :-1]",
     ["tests/llm/test_trainers.py", "-k", "logprob or dpo"]),
    ("gamma is the ensemble mean", "llm/training/trainers.py",
     'return {"gamma_chosen": (chosen - offsets).std(0, ddof=1), "gamma_rejected": (rejected - offsets).std(0, ddof=1)}',
     'return {"gamma_chosen": (chosen - offsets).mean(0), "gamma_rejected": (rejected - offsets).mean(0)}',
     ["tests/llm/test_trainers.py", "-k", "gamma"]),
    ("generate ignores top_p", "llm/inference/sampling.py",
     "filtered = filter_logits(logits, temperature=temperature, top_k=top_k, top_p=top_p if nucleus else 1.0)",
     "filtered = filter_logits(logits, temperature=temperature, top_k=top_k, top_p=1.0)",
     ["tests/llm/test_models.py", "-k", "filtered_distribution"]),
    ("win rate for the wrong side", "llm/preference/evaluate.py",
     "diff = np.asarray(rewards) - np.asarray(baseline_rewards)",
     "diff = np.asarray(baseline_rewards) - np.asarray(rewards)", ["tests/llm/test_oracle_evaluate.py"]),
    ("prompt and response tokenized apart", "llm/inference/tokenizer.py",
     'return list(tokenizer(prompt + completion + eos)["input_ids"])',
     'return prompt_ids(tokenizer, prompt) + tokenizer(completion + eos, add_special_tokens=False)["input_ids"]',
     ["tests/llm/test_tokenizer.py"]),
    ("completion split at the prompt's own length", "llm/inference/tokenizer.py",
     "cut = min(common_prefix_length(own, j) for j in joint)", "cut = len(own)", ["tests/llm/test_tokenizer.py"]),
    ("no bos", "llm/inference/tokenizer.py", 'return list(tokenizer(prompt)["input_ids"])',
     'return list(tokenizer(prompt, add_special_tokens=False)["input_ids"])', ["tests/llm/test_tokenizer.py"]),
    ("rso accepts truncated candidates", "llm/preference/pipelines.py",
     "chosen, rejected = map(np.asarray, pick(keys, rewards, stopped))",
     "chosen, rejected = map(np.asarray, pick(keys, rewards, np.ones_like(stopped)))",
     [PIPELINES, "-k", "truncated_candidate"]),
    ("truncated pairs labelled", "llm/preference/stages.py", "if not (done_a and done_b):", "if False:",
     [PIPELINES, "-k", "not_labelled"]),
    ("best-of-n keeps the worst", "llm/preference/pipelines.py",
     "pick = np.where(eligible, rewards, -np.inf).argmax(1)", "pick = np.where(eligible, -rewards, -np.inf).argmax(1)",
     [PIPELINES, "-k", "best_finished"]),
    ("oracle labels backwards", "llm/preference/stages.py",
     "rows = [data.preference_row(x, ya if w else yb, yb if w else ya) for x, ya, yb, w in zip(prompts, a, b, a_wins)]",
     "rows = [data.preference_row(x, yb if w else ya, ya if w else yb) for x, ya, yb, w in zip(prompts, a, b, a_wins)]",
     [PIPELINES, "-k", "table_for_every_method"]),
    ("multi-step rso proposes from pi0", "llm/preference/pipelines.py",
     "pairs = rso_dataset(config, policy, [prompts[j] for j in share], config.pipeline.multistep_coefficient,",
     "pairs = rso_dataset(config, config.model.path, [prompts[j] for j in share], "
     "config.pipeline.multistep_coefficient,", [PIPELINES, "-k", "rso_pairs_prefer"]),
    ("holm is bonferroni", "gshf_jax/significance.py", "if p[i] > alpha / (k - rank):",
     "if p[i] > alpha / k:", ["tests/gshf_jax/test_significance.py"]),
    ("frontier interpolates toward the wrong end", "llm/preference/frontier.py",
     'return w * np.asarray(start["rewards"]) + (1 - w) * np.asarray(end["rewards"])',
     'return (1 - w) * np.asarray(start["rewards"]) + w * np.asarray(end["rewards"])', ["tests/llm/test_frontier.py"]),
    ("matched-KL error ignores the replicates", "llm/preference/frontier.py",
     "se = max(se_prompts, se_seeds) if math.isfinite(se_seeds) else se_prompts", "se = se_prompts",
     ["tests/llm/test_frontier.py"]),
    ("selection takes the lowest validation reward", "llm/preference/frontier.py",
     'return max(candidates, key=lambda c: c["validation_reward"])',
     'return min(candidates, key=lambda c: c["validation_reward"])', ["tests/llm/test_frontier.py"]),
    ("equal-information baseline selects the worst prefix", "bandit_sim/experiments/_common.py",
     "return bandit.suboptimality(env, logps[jnp.argmax(values)]), bandit.suboptimality(env, logps[-1]), data",
     "return bandit.suboptimality(env, logps[jnp.argmin(values)]), bandit.suboptimality(env, logps[-1]), data",
     ["tests/bandit_sim/test_experiments.py"]),
    ("online experiment's best iterate is the worst", "bandit_sim/experiments/online.py",
     "best_iterate=jnp.min(h.main_suboptimality), main_by_t=h.main_suboptimality,",
     "best_iterate=jnp.max(h.main_suboptimality), main_by_t=h.main_suboptimality,",
     [RUNS, "-k", "online"]),
    ("rejection experiment reports best-of-(n+1)'s KL bound", "bandit_sim/experiments/rejection.py",
     'rows.append({"n": n, "bound": float(g.best_of_n_kl_bound(n)), "mean_kl": float(kl.mean()),',
     'rows.append({"n": n, "bound": float(g.best_of_n_kl_bound(n + 1)), "mean_kl": float(kl.mean()),',
     [RUNS, "-k", "rejection"]),
    ("hybrid experiment's Theorem D.2 potential without d in the log", "bandit_sim/experiments/hybrid.py",
     "potential = beta * math.sqrt(6 * T * d * math.log(1 + T / (d * lam)))",
     "potential = beta * math.sqrt(6 * T * d * math.log(1 + T / lam))", [RUNS, "-k", "hybrid"]),
    ("sample command ignores temperature", "llm/preference/stages.py", "temperature=temperature, top_k=top_k,",
     "temperature=1.0, top_k=top_k,", ["tests/llm/test_oracle_evaluate.py", "-k", "exact_truncated"]),
    ("sft loss averaged per example, not per token", "gshf_jax/losses.py",
     "return -pi_c * pi_c.shape[0] / jnp.sum(n_c)", "return -pi_c / n_c", ["tests/gshf_jax/test_loss_family.py"]),
    ("simpo margin added instead of subtracted", "gshf_jax/losses.py",
     "return smoothed_logistic(beta * (jnp.asarray(pi_c) / n_c - jnp.asarray(pi_r) / n_r) - gamma, label_smoothing)",
     "return smoothed_logistic(beta * (jnp.asarray(pi_c) / n_c - jnp.asarray(pi_r) / n_r) + gamma, label_smoothing)",
     ["tests/gshf_jax/test_loss_family.py"]),
    ("gemma norm scales by w, not 1 + w", "llm/models/gemma/block.py",
     "return (rms_normalized(x, self.eps) * (1.0 + self.scale[...].astype(jnp.float32))).astype(x.dtype)",
     "return (rms_normalized(x, self.eps) * self.scale[...].astype(jnp.float32)).astype(x.dtype)",
     ["tests/llm/test_models.py", "-k", "logits_match and gemma"]),
    ("qwen3 skips its q/k norms", "llm/models/llama/block.py", "      q, k = self.q_norm(q), self.k_norm(k)",
     "      q, k = q, k", ["tests/llm/test_models.py", "-k", "logits_match and qwen3"]),
    ("gemma 2 attention scores not soft-capped", "llm/models/gemma/block.py", "softcap=c.attn_logit_softcap)",
     "softcap=None)", ["tests/llm/test_models.py", "-k", "logits_match and gemma2"]),
    ("lora scales by alpha * r", "llm/models/lora.py", "return alpha / (math.sqrt(rank) if rslora else rank)",
     "return alpha * (math.sqrt(rank) if rslora else rank)", ["tests/llm/test_lora.py", "-k", "peft"]),
    ("lora trains the base too", "llm/models/lora.py", "  return nnx.Any(nnx.LoRAParam, nnx.PathContains(\"score\"))",
     "  return nnx.Param", ["tests/llm/test_lora.py", "-k", "optimizer_state"]),
    ("scanned layers all attend fully", "llm/models/transformer.py",
     "    ctx = full if not any(slides) else jax.tree.map(lambda s, f: jnp.where(slides_here, s, f), sliding, full)",
     "    ctx = full", ["tests/llm/test_scan.py", "-k", "logits"]),
    ("scanned export writes layer 0 everywhere", "llm/models/hf_io.py",
     "      layer_value = value if layer is None else value[layer]", "      layer_value = value if layer is None else value[0]",
     ["tests/llm/test_scan.py", "-k", "logits"]),
    ("remat policy ignored", "llm/models/transformer.py",
     "  policy = getattr(jax.checkpoint_policies, config.remat_policy)",
     "  policy = jax.checkpoint_policies.nothing_saveable", ["tests/llm/test_scan.py", "-k", "remat"]),
    ("splash window one slot wider", "llm/models/splash.py",
     "splash.LocalMask(shape, (window - 1, 0), offset=0)", "splash.LocalMask(shape, (window, 0), offset=0)",
     ["tests/llm/test_attention.py", "-k", "splash"]),
    ("splash sees padding", "llm/models/splash.py",
     "  segments = widen(valid.astype(jnp.int32))  # 1: a real token, 0: padding (which sees padding only)",
     "  segments = widen(jnp.ones_like(valid, jnp.int32))", ["tests/llm/test_attention.py", "-k", "splash"]),
    ("sampler's KV cache without the values", "llm/training/aot.py",
     "  cache = (2 * model.num_layers * rows * (prompt + new) * model.num_kv_heads * model.head_dim",
     "  cache = (model.num_layers * rows * (prompt + new) * model.num_kv_heads * model.head_dim",
     ["tests/llm/test_aot.py", "-k", "sampler"]),
]

def tracked_copy(destination):
  files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
  for file in files:
    if os.path.isfile(os.path.join(ROOT, file)):
      os.makedirs(os.path.dirname(os.path.join(destination, file)), exist_ok=True)
      shutil.copy2(os.path.join(ROOT, file), os.path.join(destination, file))


def run(name, file, old, new, tests):
  """True when a test fails on the mutated copy (the mutation is caught)."""
  with tempfile.TemporaryDirectory() as copy:
    tracked_copy(copy)
    path = os.path.join(copy, file)
    text = open(path).read()
    if text.count(old) != 1:
      raise SystemExit(f"{name}: {file} holds {text.count(old)} copies of the line to mutate; update the list")
    open(path, "w").write(text.replace(old, new))
    env = {**os.environ, "PYTHONPATH": copy}
    result = subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:xdist", "-p", "no:cacheprovider",
                             "-o", "addopts=--import-mode=importlib", *tests], cwd=copy, env=env,
                            capture_output=True, text=True)
    if result.returncode not in (0, 1):  # 1: a test failed; anything else (no such test, collection error) is no verdict
      raise SystemExit(f"{name}: pytest exited {result.returncode}:\n{(result.stdout + result.stderr)[-2000:]}")
    return result.returncode == 1


def main(words):
  chosen = [m for m in MUTATIONS if not words or any(w in m[0] for w in words)]
  survived = []
  for name, file, old, new, tests in chosen:
    start = time.time()
    caught = run(name, file, old, new, tests)
    print(f"{'caught  ' if caught else 'SURVIVED'} {name} ({file}, {time.time() - start:.0f} s)", flush=True)
    if not caught:
      survived.append(name)
  print(f"{len(chosen) - len(survived)} of {len(chosen)} mutations caught")
  return 1 if survived else 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
