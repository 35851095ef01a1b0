"""bandit_sim: the exact linear KL-regularized contextual bandit of the paper (Section 2), its
algorithms and experiments (`python -m bandit_sim.experiment`). Built on gshf_jax.
"""

from bandit_sim.env import (LinearBandit, Preferences, collect_preferences, expected_features,
                            feature_differences, make_linear_bandit, optimal_logp, preference_probability,
                            rewards, suboptimality, value)
