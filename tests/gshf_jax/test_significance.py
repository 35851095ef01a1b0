"""Holm's correction against a transcription on SciPy's normal p-values."""

import numpy as np
from scipy import stats

from gshf_jax.significance import holm_significant


def holm_by_scipy(mean_ses, alpha=0.05, negative=True, two_sided=False):
  """Holm's step-down procedure on normal p-values, written from its definition."""
  z = np.array([m / s for m, s in mean_ses])
  p = 2 * stats.norm.sf(np.abs(z)) if two_sided else stats.norm.cdf(z) if negative else stats.norm.sf(z)
  order, k = np.argsort(p), len(p)
  rejected = np.zeros(k, bool)
  for rank, i in enumerate(order):
    if p[i] > alpha / (k - rank):
      break
    rejected[i] = True
  return rejected.tolist()


def test_holm_keeps_the_family_wise_error_where_two_standard_errors_do_not():
  four_at_2_2 = [(-2.2, 1.0)] * 4  # each p = 0.0139: below 0.05, above 0.05 / 4
  assert all(m + 2 * s < 0 for m, s in four_at_2_2)  # each passes the 2-standard-error rule
  assert holm_significant(four_at_2_2) == [False] * 4
  steps = [(-1.0, 1.0), (-3.0, 1.0), (-2.2, 1.0)]  # p 0.159, 0.00135 (< 0.05/3), 0.0139 (< 0.05/2)
  assert holm_significant(steps) == [False, True, True]
  assert holm_significant(steps, negative=False) == [False] * 3
  rng = np.random.default_rng(0)
  for _ in range(200):
    family = [(float(m), float(s)) for m, s in zip(rng.normal(0, 3, 6), rng.uniform(0.5, 2, 6))]
    for negative in (True, False):
      assert holm_significant(family, negative=negative) == holm_by_scipy(family, negative=negative)
    assert holm_significant(family, two_sided=True) == holm_by_scipy(family, two_sided=True)
  both = [(-3.0, 1.0), (3.0, 1.0), (0.5, 1.0)]  # two-sided p 0.0027 each (< 0.05 / 3, 0.05 / 2), 0.62
  assert holm_significant(both, two_sided=True) == [True, True, False]
