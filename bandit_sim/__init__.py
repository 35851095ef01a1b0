"""bandit_sim: the exact linear KL-regularized contextual bandit of the paper (Section 2) and its
experiments, `python -m bandit_sim.experiment`. Built on gshf_jax.

So far it holds the experiment runner and the `core` experiment, which measures the gshf_jax core's
statistical claims on random linear instances; the bandit environment and the paper's algorithms are
tracked as separate issues.
"""
