"""gshf_jax: the algorithm core of gshf-jax, pure jax.numpy functions shared by bandit_sim and llm.

Modules: gibbs (Gibbs policy, KL, regularized value), preference (Bradley-Terry likelihood and MLE),
uncertainty (covariance, elliptical norms, confidence radius), losses (the pairwise-loss registry: DPO,
pessimistic DPO, hinge, IPO, TRL's DPO loss family, SimPO, ORPO), rejection (RSO, multi-step RSO, best-of-n), nash (the KL-regularized
preference game). Three standard-library utilities both halves share: atomic (the one atomic file writer),
significance (Holm's correction) and workarounds (XLA CPU workarounds, applied by every entry point). Imports no flax, transformers or
matplotlib.
"""

from gshf_jax import gibbs as gibbs
from gshf_jax import losses as losses
from gshf_jax import nash as nash
from gshf_jax import preference as preference
from gshf_jax import rejection as rejection
from gshf_jax import uncertainty as uncertainty
from gshf_jax.gibbs import gibbs_logprobs as gibbs_logprobs
from gshf_jax.gibbs import kl as kl
from gshf_jax.gibbs import regularized_value as regularized_value
from gshf_jax.losses import PAIRWISE_LOSSES as PAIRWISE_LOSSES
from gshf_jax.losses import check_options as check_options
from gshf_jax.losses import combined_loss as combined_loss
from gshf_jax.losses import dpo_loss as dpo_loss
from gshf_jax.losses import hinge_loss as hinge_loss
from gshf_jax.losses import ipo_loss as ipo_loss
from gshf_jax.losses import pairwise_loss as pairwise_loss
from gshf_jax.losses import reward_loss as reward_loss
from gshf_jax.nash import best_response as best_response
from gshf_jax.nash import duality_gap as duality_gap
from gshf_jax.nash import game_value as game_value
from gshf_jax.nash import nash_equilibrium as nash_equilibrium
from gshf_jax.nash import saddle_point as saddle_point
from gshf_jax.preference import bt_log_likelihood as bt_log_likelihood
from gshf_jax.preference import bt_mle as bt_mle
from gshf_jax.preference import gamma as gamma
from gshf_jax.rejection import acceptance_rate as acceptance_rate
from gshf_jax.rejection import best_of_n_kl_bound as best_of_n_kl_bound
from gshf_jax.rejection import best_of_n_logprobs as best_of_n_logprobs
from gshf_jax.rejection import multistep_etas as multistep_etas
from gshf_jax.rejection import rso_pairs as rso_pairs
from gshf_jax.rejection import rso_rejection_sample as rso_rejection_sample
from gshf_jax.uncertainty import confidence_radius as confidence_radius
from gshf_jax.uncertainty import covariance as covariance
from gshf_jax.uncertainty import elliptical_norm as elliptical_norm

__version__ = "0.1.0"
