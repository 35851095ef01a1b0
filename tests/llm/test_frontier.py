"""Reward-KL paths at matched KL (llm.preference.frontier) against hand-computed cases."""

import numpy as np
import pytest

from llm.preference import frontier


def point(kl, rewards, validation=0.0):
  return {"kl": kl, "rewards": list(rewards), "validation_reward": validation}


def test_rewards_at_kl_interpolate_on_the_first_segment_that_reaches_the_level():
  path = [point(0.0, [0.0, 1.0]), point(0.4, [1.0, 1.0]), point(0.2, [5.0, 5.0]), point(1.0, [2.0, 3.0])]
  np.testing.assert_allclose(frontier.rewards_at_kl(path, 0.0), [0.0, 1.0])
  np.testing.assert_allclose(frontier.rewards_at_kl(path, 0.1), [0.25, 1.0])  # w = 0.75 on [0, 0.4]
  # 0.3 is first reached on the way up to 0.4, not on the later segments that pass it again
  np.testing.assert_allclose(frontier.rewards_at_kl(path, 0.3), [0.75, 1.0])
  np.testing.assert_allclose(frontier.rewards_at_kl(path, 0.6), [3.5, 4.0])  # on [0.2, 1.0], w = 0.5
  assert frontier.reach(path) == 1.0 and frontier.rewards_at_kl(path, 1.01) is None


def test_matched_kl_difference_standard_errors_and_verdicts():
  rng = np.random.default_rng(0)
  prompts, seeds = 200, 3
  dpo, better, same = [], [], []
  for s in range(seeds):
    base = rng.normal(0, 1, prompts)
    dpo.append([point(0.0, base), point(0.5, base + 0.5), point(1.0, base + 1.0)])
    # at every KL this path is 0.5 above DPO's on each prompt, up to per-prompt noise of s.d. 0.1
    better.append([point(0.0, base + 0.5 + rng.normal(0, 0.1, prompts)), point(2.0, base + 2.5)])
    same.append(dpo[-1][:2])  # DPO's own path, to KL 0.5 only
  rows = frontier.matched_kl_comparison({"DPO": dpo, "better": better, "same": same}, "DPO",
                                        fractions=(0.5, 1.0))
  assert set(rows) == {"better", "same"}
  # levels: fractions of the smallest reach of the pair (better: min(2, 1) = 1; same: 0.5)
  assert [r["kl"] for r in rows["better"]] == [0.5, 1.0] and [r["kl"] for r in rows["same"]] == [0.25, 0.5]
  high = rows["better"][1]  # at KL 1: better = base + 1.5 (w = 0.5 of its segment), DPO = base + 1
  diffs = np.stack([np.asarray(b[0]["rewards"]) * 0.5 + np.asarray(b[1]["rewards"]) * 0.5
                    - np.asarray(d[2]["rewards"]) for b, d in zip(better, dpo)])
  assert high["difference"] == pytest.approx(diffs.mean())
  assert high["se_prompts"] == pytest.approx(diffs.mean(0).std(ddof=1) / np.sqrt(prompts))
  assert high["se_seeds"] == pytest.approx(diffs.mean(1).std(ddof=1) / np.sqrt(seeds))
  assert high["se"] == max(high["se_prompts"], high["se_seeds"])
  assert [r["verdict"] for r in rows["better"]] == ["better", "better"]
  assert all(r["difference"] == 0 and r["verdict"] == "no significant difference" for r in rows["same"])
  # a difference that is the same on every prompt but moves with the replicate: only se_seeds sees it
  shifted = [[point(0.0, np.asarray(d[0]["rewards"]) + 0.2 + 0.4 * (s - 1)), point(1.0, np.asarray(d[2]["rewards"])
                                                                                  + 0.2 + 0.4 * (s - 1))]
             for s, d in enumerate(dpo)]
  (row,) = frontier.matched_kl_comparison({"DPO": dpo, "shifted": shifted}, "DPO", fractions=(1.0,))["shifted"]
  assert row["difference"] == pytest.approx(0.2) and row["se_prompts"] == pytest.approx(0.0, abs=1e-12)
  assert row["se"] == row["se_seeds"] == pytest.approx(0.4 / np.sqrt(3))
  assert row["verdict"] == "no significant difference"
  flipped = frontier.matched_kl_comparison({"DPO": better, "worse": dpo}, "DPO")
  assert all(r["verdict"] == "worse" for r in flipped["worse"])


def test_one_replicate_uses_the_prompt_standard_error_and_holm_covers_the_table():
  base = np.zeros(100)
  noise = np.random.default_rng(1).normal(0, 1, 100)
  dpo = [[point(0.0, base), point(1.0, base)]]
  # a difference of 2.4 standard errors: significant alone, not after Holm over 2 x 3 comparisons
  shift = 2.4 * noise.std(ddof=1) / 10 - noise.mean()
  edge = [[point(0.0, base + noise + shift), point(1.0, base + noise + shift)]]
  rows = frontier.matched_kl_comparison({"DPO": dpo, "edge": edge, "flat": dpo}, "DPO")
  assert np.isnan(rows["edge"][0]["se_seeds"]) and rows["edge"][0]["se"] == rows["edge"][0]["se_prompts"]
  assert rows["edge"][0]["difference"] / rows["edge"][0]["se"] == pytest.approx(2.4)
  assert all(r["verdict"] == "no significant difference" for r in rows["edge"])
  alone = frontier.matched_kl_comparison({"DPO": dpo, "edge": edge}, "DPO", fractions=(1.0,))
  assert alone["edge"][0]["verdict"] == "better"


def test_selection_takes_the_highest_validation_reward():
  candidates = [point(0.1, [0.0], validation=0.2), point(0.5, [9.0], validation=0.7), point(0.9, [1.0], validation=0.7)]
  assert frontier.select_by_validation(candidates) is candidates[1]  # the test rewards play no part; first on ties
