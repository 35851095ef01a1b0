"""Holm's step-down correction for a family of z-tests, shared by the bandit experiments and the LLM
comparison wherever the best of several settings or comparisons is reported (standard library only)."""

import math


def holm_significant(mean_ses, alpha: float = 0.05, negative: bool = True, two_sided: bool = False) -> list[bool]:
  """Holm's step-down correction of z-tests (mean / s.e., normal approximation) of k paired differences:
  which are significantly below 0 (above 0 when `negative` is False; away from 0 in either direction when
  `two_sided`) with the family-wise error rate at most `alpha`."""
  sign = -1.0 if negative else 1.0

  def p_value(m, s):
    if two_sided:
      return math.erfc(abs(m) / (s * math.sqrt(2))) if s > 0 else float(m == 0)
    return 0.5 * math.erfc(sign * m / (s * math.sqrt(2))) if s > 0 else float(sign * m <= 0)

  p = [p_value(m, s) for m, s in mean_ses]
  significant, k = [False] * len(p), len(p)
  for rank, i in enumerate(sorted(range(k), key=p.__getitem__)):
    if p[i] > alpha / (k - rank):
      break
    significant[i] = True
  return significant
