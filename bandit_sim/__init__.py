"""bandit_sim: the exact linear KL-regularized contextual bandit of the paper (Section 2) and its
algorithms, built on gshf_jax. Library modules: env (instances, preferences, values), offline (Section 3:
MLE, Options I/II, DPO), online (Algorithm 2), rso (rejection sampling, multi-step RSO), nlhf (general
preferences), mixture (the continuous model of Figures 1 and 3). The experiments that check the paper's
claims live in bandit_sim.experiments (`python -m bandit_sim.experiment`); the library never imports them.
"""

from bandit_sim.env import LinearBandit as LinearBandit
from bandit_sim.env import Preferences as Preferences
from bandit_sim.env import collect_preferences as collect_preferences
from bandit_sim.env import expected_features as expected_features
from bandit_sim.env import feature_differences as feature_differences
from bandit_sim.env import make_linear_bandit as make_linear_bandit
from bandit_sim.env import optimal_logp as optimal_logp
from bandit_sim.env import preference_probability as preference_probability
from bandit_sim.env import rewards as rewards
from bandit_sim.env import suboptimality as suboptimality
from bandit_sim.env import value as value
