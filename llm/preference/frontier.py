"""Reward-KL curves and comparisons at matched KL (the paper's Figures 2 and 4: gold reward against
KL(pi || pi0) along training).

A curve point is one policy scored on a fixed prompt set: per prompt, the gold reward of one response
sampled at temperature 1 and that response's log pi(y|x) - log pi0(y|x) (their mean estimates
KL(pi || pi0)). Every point of every method is scored on the same prompts with the same sampling key, so
differences between methods are paired by prompt.

A path is the points of one training run in step order, starting at pi0 (KL 0). Its reward at KL k is
read off the first segment whose KL reaches k, by linear interpolation with weight w: the policy that
plays the segment's two end points with probabilities w and 1 - w has exactly that reward and, KL being
convex, a KL of at most k, so the interpolated point is achievable. Nothing is selected on the scored
prompts: the path is fixed by training. A path that overshoots in KL and comes back is read on its way up,
which is conservative for it (a later, better point at the same KL is not credited).
"""

import math

import numpy as np

from gshf_jax.significance import holm_significant
from llm.inference import sampling
from llm.preference.evaluate import kl_estimate, mean_se


def curve_point(policy, reference, tokenizer, oracle, prompts, key, *, max_new_tokens, batch_size,
                max_prompt_length):
  """One point of a reward-KL curve: {"rewards" [P], "log_ratios" [P] (lists), "reward", "reward_se", "kl",
  "kl_se"} of one temperature-1 response per prompt of `policy`, KL against `reference` (pi0)."""
  samples = sampling.sample_texts(policy, tokenizer, prompts, key, max_new_tokens=max_new_tokens, temperature=1.0,
                                  batch_size=batch_size, max_prompt_length=max_prompt_length)
  rewards = np.asarray(oracle.rewards(prompts, samples["responses"]), np.float64)
  kl, kl_se, ratios = kl_estimate(policy, reference, samples, batch_size)
  reward, reward_se = mean_se(rewards)
  return {"rewards": rewards.tolist(), "log_ratios": np.asarray(ratios, np.float64).tolist(), "reward": reward,
          "reward_se": reward_se, "kl": kl, "kl_se": kl_se}


def rewards_at_kl(path, kl):
  """Per-prompt rewards [P] of a path (points in training order, each with "kl" and "rewards", the first
  pi0's) at KL `kl` >= 0: interpolated on the first segment that reaches it (the module docstring); None
  beyond reach(path)."""
  if kl <= path[0]["kl"]:
    return np.asarray(path[0]["rewards"])
  for start, end in zip(path, path[1:]):
    if start["kl"] <= kl <= end["kl"]:
      w = (end["kl"] - kl) / (end["kl"] - start["kl"])
      return w * np.asarray(start["rewards"]) + (1 - w) * np.asarray(end["rewards"])
  return None


def reach(path):
  """The largest KL on a path: rewards_at_kl reads every level up to it (the path is continuous from pi0,
  so it first reaches each level going upward)."""
  return max(point["kl"] for point in path)


def matched_kl_comparison(paths, baseline, fractions=(1 / 3, 2 / 3, 1.0)):
  """Each method against `baseline` at matched KL, paired by prompt, over seeds.

  Args:
    paths: {method: [path of seed s]} (every method has the same seeds, every path the same prompts).
    baseline: the method the others are compared with.
    fractions: the KL levels, as fractions of the largest KL that both paths of the pair reach in every seed.

  Returns {method: [{"kl", "difference", "se_prompts", "se_seeds", "se", "verdict"}]}: difference = mean over
  seeds and prompts of reward(method) - reward(baseline) at that KL; se_prompts = the standard error over
  prompts of the per-prompt difference averaged over seeds; se_seeds = the standard error of the per-seed
  means (NaN with one seed); se = the larger of the two. Verdicts: "better" / "worse" when significant by
  Holm's correction (two-sided, 5%) over every (method, level) of the call, else "no significant difference".
  """
  rows = {}
  for method, method_paths in paths.items():
    if method == baseline:
      continue
    top = min(min(reach(p) for p in method_paths), min(reach(p) for p in paths[baseline]))
    rows[method] = []
    for fraction in fractions:
      kl = fraction * top
      rows[method].append({"kl": kl, **paired_difference([rewards_at_kl(m, kl) for m in method_paths],
                                                          [rewards_at_kl(b, kl) for b in paths[baseline]])})
  flat = [row for method_rows in rows.values() for row in method_rows]
  for row, significant in zip(flat, holm_significant([(r["difference"], r["se"]) for r in flat], two_sided=True)):
    row["verdict"] = ("better" if row["difference"] > 0 else "worse") if significant else "no significant difference"
  return rows


def paired_difference(a, b):
  """a - b for per-prompt rewards [replicate][prompt]: {"difference": the mean, "se_prompts": the standard
  error over prompts of the replicate-averaged difference, "se_seeds": over the replicates' means (NaN with
  one), "se": the larger of the two}."""
  diffs = np.asarray(a, np.float64) - np.asarray(b, np.float64)
  difference, se_prompts = mean_se(diffs.mean(0))
  se_seeds = mean_se(diffs.mean(1))[1]
  se = max(se_prompts, se_seeds) if math.isfinite(se_seeds) else se_prompts
  return {"difference": difference, "se_prompts": se_prompts, "se_seeds": se_seeds, "se": se}


def select_by_validation(candidates):
  """The candidate (a dict with "validation_reward") of the highest mean validation gold reward (Appendix
  H's selection of the DPO model, given to every method alike); the first on ties."""
  return max(candidates, key=lambda c: c["validation_reward"])
