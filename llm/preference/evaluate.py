"""Evaluation of a policy as in Section 5 / Appendix H: gold reward on held-out prompts (and on an
out-of-distribution set, with Table 1's in-domain minus OOD difference), KL(pi || pi0) estimated from
samples, head-to-head win / lose / tie against a baseline judged by the gold reward (Table 4: score =
win + tie / 2), mean response length, and the gold reward over sampling temperatures (Figure 5).

Every mean comes with its standard error (over responses; the KL's over responses too).
"""

import json
import math
import os

import jax
import numpy as np

from gshf_jax import atomic
from llm.inference import logprobs, sampling


def mean_se(x):
  """(mean, standard error) of a sample."""
  x = np.asarray(x, np.float64)
  return float(x.mean()), float(x.std(ddof=1) / math.sqrt(len(x))) if len(x) > 1 else float("nan")


def response_logprobs(model, samples, batch_size):
  """log pi(y | x) [N] of sampled responses under `model` (temperature 1, no top-k / top-p)."""
  from llm.parallel.distributed import map_batches
  arrays = {k: samples[k] for k in ("prompt_ids", "prompt_mask", "response_ids", "response_mask")}
  return map_batches(lambda b: logprobs.batch_logprobs(model, b), arrays, batch_size)


def kl_estimate(policy, reference, samples, batch_size):
  """KL(pi || pi0) = E_{x, y ~ pi}[log pi(y|x) - log pi0(y|x)]: (mean, standard error) over the samples
  (drawn from pi at temperature 1), and the per-sample log-ratios."""
  ratio = response_logprobs(policy, samples, batch_size) - response_logprobs(reference, samples, batch_size)
  return (*mean_se(ratio), ratio)


def head_to_head(rewards, baseline_rewards, tie_tolerance=0.0):
  """Win / lose / tie shares of rewards against baseline_rewards on the same prompts (ties: |difference| <=
  tie_tolerance) and Table 4's score = win + tie / 2 with its standard error."""
  diff = np.asarray(rewards) - np.asarray(baseline_rewards)
  win, lose = diff > tie_tolerance, diff < -tie_tolerance
  tie = ~win & ~lose
  score, se = mean_se(win + 0.5 * tie)
  return {"win": float(win.mean()), "lose": float(lose.mean()), "tie": float(tie.mean()), "score": score,
          "score_se": se}


def evaluate_policy(policy, tokenizer, oracle, prompts, key, *, reference=None, baseline=None, ood_prompts=None,
                    temperatures=(1.0,), max_new_tokens=64, batch_size=32, tie_tolerance=0.0, max_prompt_length=1024):
  """All of the module's measurements for one policy (one response per prompt and temperature).

  Args:
    policy, reference, baseline: causal LMs sharing `tokenizer` (reference: pi0 for the KL; baseline: the
      opponent of the win rate; both optional).
    oracle: a reward oracle (llm.preference.oracle.RewardOracle) giving the gold reward.
    prompts, ood_prompts: lists of strings.
    key: PRNG key (the same key gives the same samples).

  Returns a dict: "temperatures": {T: {"reward", "reward_se", "length"}}, and at temperature 1 (sampled
  if not in the sweep): "reward", "reward_se", "length", "kl", "kl_se" (with a reference), "win_rate"
  (with a baseline), "ood_reward", "ood_reward_se", "id_minus_ood" (with OOD prompts).
  """
  def run(model, prompt_list, temperature, salt):
    samples = sampling.sample_texts(model, tokenizer, prompt_list, jax.random.fold_in(key, salt),
                                    max_new_tokens=max_new_tokens, temperature=temperature, batch_size=batch_size,
                                    max_prompt_length=max_prompt_length)
    samples["rewards"] = oracle.rewards(prompt_list, samples["responses"])
    return samples

  result = {"num_prompts": len(prompts), "temperatures": {}}
  at_one = None
  for i, temperature in enumerate(sorted(set(temperatures) | {1.0})):
    samples = run(policy, prompts, temperature, i)
    reward, se = mean_se(samples["rewards"])
    if temperature in temperatures:
      result["temperatures"][str(temperature)] = {"reward": reward, "reward_se": se,
                                                  "length": float(samples["lengths"].mean())}
    if temperature == 1.0:
      at_one = samples
      result.update(reward=reward, reward_se=se, length=float(samples["lengths"].mean()),
                    example={"prompt": prompts[0], "response": samples["responses"][0]})
  if reference is not None:
    result["kl"], result["kl_se"], _ = kl_estimate(policy, reference, at_one, batch_size)
  if baseline is not None:
    opponent = run(baseline, prompts, 1.0, 1000)
    result["win_rate"] = head_to_head(at_one["rewards"], opponent["rewards"], tie_tolerance)
    result["baseline_reward"], result["baseline_reward_se"] = mean_se(opponent["rewards"])
  if ood_prompts:
    ood = run(policy, ood_prompts, 1.0, 2000)
    result["ood_reward"], result["ood_reward_se"] = mean_se(ood["rewards"])
    result["id_minus_ood"] = result["reward"] - result["ood_reward"]
  return result


def markdown(results):
  """A Table-1-style Markdown table of {name: evaluate_policy result} (missing measurements left blank)."""
  def cell(r, key, se_key=None, scale=1.0):
    if key not in r:
      return ""
    return f"{r[key] * scale:.3f}" + (f" ± {r[se_key] * scale:.3f}" if se_key and se_key in r else "")

  lines = ["| policy | gold reward | KL(π‖π0) | win rate (win + tie/2) | W / L / T | OOD reward | ID − OOD | length |",
           "| --- | --- | --- | --- | --- | --- | --- | --- |"]
  for name, r in results.items():
    w = r.get("win_rate")
    lines.append(" | ".join([
        f"| {name}", cell(r, "reward", "reward_se"), cell(r, "kl", "kl_se"),
        f"{w['score']:.3f} ± {w['score_se']:.3f}" if w else "",
        f"{w['win']:.2f} / {w['lose']:.2f} / {w['tie']:.2f}" if w else "",
        cell(r, "ood_reward", "ood_reward_se"), cell(r, "id_minus_ood"), cell(r, "length")]) + " |")
  return "\n".join(lines) + "\n"


def plot_temperatures(results, path):
  """Gold reward against sampling temperature, one line per policy (Figure 5)."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  fig, ax = plt.subplots(figsize=(5, 3.5))
  for name, r in results.items():
    temps = sorted(r["temperatures"], key=float)
    ax.errorbar([float(t) for t in temps], [r["temperatures"][t]["reward"] for t in temps],
                yerr=[r["temperatures"][t]["reward_se"] for t in temps], marker="o", capsize=3, label=name)
  ax.set_xlabel("sampling temperature")
  ax.set_ylabel("gold reward")
  ax.legend(fontsize=8)
  fig.tight_layout()
  save_figure(fig, path)


def save_figure(fig, path):
  """The figure as PNG (gshf_jax.atomic), then closed."""
  import matplotlib.pyplot as plt
  atomic.save_figure(fig, path)
  plt.close(fig)


def write_report(results, out_dir, name="evaluation"):
  """out_dir/{name}.json, {name}.md and {name}_temperature.png, each written atomically."""
  os.makedirs(out_dir, exist_ok=True)
  atomic.write_text(os.path.join(out_dir, f"{name}.json"), json.dumps(results, indent=2, default=float))
  atomic.write_text(os.path.join(out_dir, f"{name}.md"), markdown(results))
  plot_temperatures(results, os.path.join(out_dir, f"{name}_temperature.png"))
