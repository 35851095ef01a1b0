"""The built-in task that `python -m llm` runs: a review-writing grammar with a VADER gold reward (task),
and the comparison of every method on it (run)."""
