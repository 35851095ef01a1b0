"""gshf_jax: the algorithm core of gshf-jax, pure jax.numpy functions shared by bandit_sim and llm.

Modules: gibbs (Gibbs policy, KL, regularized value), preference (Bradley-Terry likelihood and MLE),
uncertainty (covariance, elliptical norms, confidence radius), losses (DPO family), rejection (RSO,
multi-step RSO, best-of-n), nash (the KL-regularized preference game).
"""

from gshf_jax import gibbs, losses, nash, preference, rejection, uncertainty
from gshf_jax.gibbs import gibbs_logprobs, kl, regularized_value
from gshf_jax.losses import dpo_loss, hinge_loss, ipo_loss, reward_loss
from gshf_jax.nash import best_response, duality_gap, game_value, nash_equilibrium, saddle_point
from gshf_jax.preference import bt_log_likelihood, bt_mle, gamma
from gshf_jax.rejection import (acceptance_rate, best_of_n_kl_bound, best_of_n_logprobs, multistep_etas,
                                rso_pairs, rso_rejection_sample)
from gshf_jax.uncertainty import confidence_radius, covariance, elliptical_norm

__version__ = "0.1.0"
