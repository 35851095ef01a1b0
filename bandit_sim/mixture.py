"""The continuous illustration of Figure 1 and Figure 3: a 2-D Gaussian-mixture pi0 tilted by a linear
reward r(a) = <c, a>.

A Gaussian mixture tilted by a linear reward is again a Gaussian mixture (completing the square):

  w_k N(a; mu_k, S_k) exp(<c, a> / eta)
    = w_k exp(<c, mu_k> / eta + c^T S_k c / (2 eta^2)) N(a; mu_k + S_k c / eta, S_k),

so pi_r ∝ pi0 exp(r / eta) (Definition 2.2) has shifted means, the same covariances and reweighted
components. The mixture is a NamedTuple of arrays, so it jits and vmaps like the bandit.
"""

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.stats import multivariate_normal

from gshf_jax import _checks


class GaussianMixture(NamedTuple):
  """sum_k exp(log_weights[k]) N(means[k], covs[k]) over R^D."""
  log_weights: jax.Array  # [C], logsumexp = 0
  means: jax.Array  # [C, D]
  covs: jax.Array  # [C, D, D] symmetric positive definite


def figure_one_mixture(dtype=jnp.float64):
  """The multi-modal 2-D "pretrained" pi0 of Figure 1: five components of unequal weight and shape."""
  weights = jnp.array([0.25, 0.25, 0.2, 0.15, 0.15], dtype)
  means = jnp.array([[-2.0, 1.5], [-1.5, -1.5], [0.0, 0.3], [1.5, 1.8], [2.0, -1.2]], dtype)
  stds = jnp.array([[0.6, 0.4], [0.5, 0.5], [0.4, 0.7], [0.5, 0.35], [0.45, 0.45]], dtype)
  corr = jnp.array([0.3, 0.0, -0.4, 0.2, 0.0], dtype)
  off = corr * stds[:, 0] * stds[:, 1]
  covs = jnp.stack([jnp.stack([stds[:, 0] ** 2, off], -1), jnp.stack([off, stds[:, 1] ** 2], -1)], -2)
  return GaussianMixture(jnp.log(weights), means, covs)


def log_density(mixture, points):
  """log pi(a) at points [..., D], returns [...]."""
  per_component = jax.vmap(lambda m, s: multivariate_normal.logpdf(points, m, s), out_axes=-1)(
      mixture.means, mixture.covs)
  return jax.nn.logsumexp(per_component + mixture.log_weights, axis=-1)


def tilt_log_weights(mixture, direction, eta):
  """Unnormalized log weights of pi0 exp(<c, a> / eta): log w_k + <c, mu_k> / eta + c^T S_k c / (2 eta^2).

  Their logsumexp is Lambda(1 / eta) = log E_{a ~ pi0} exp(<c, a> / eta), the log normalizer.
  """
  spread = jnp.einsum("d,kde,e->k", direction, mixture.covs, direction)
  return mixture.log_weights + mixture.means @ direction / eta + spread / (2 * eta ** 2)


def tilt(mixture, direction, eta):
  """Figure 1's pi_r ∝ pi0 exp(<c, a> / eta) in closed form (module docstring); eta = inf returns pi0.

  Args:
    mixture: GaussianMixture pi0.
    direction: [D] the reward vector c.
    eta: KL coefficient > 0 (float('inf') allowed).

  Returns:
    GaussianMixture.
  """
  _checks.check_shape("direction", direction, mixture.means.shape[-1:])
  if isinstance(eta, (int, float)) and math.isinf(eta) and eta > 0:
    return mixture
  _checks.check_positive("eta", eta)
  log_weights = tilt_log_weights(mixture, direction, eta)
  means = mixture.means + jnp.einsum("kde,e->kd", mixture.covs, direction) / eta
  return GaussianMixture(jax.nn.log_softmax(log_weights), means, mixture.covs)


def mean(mixture):
  """E[a] = sum_k w_k mu_k, [D]."""
  return jnp.exp(mixture.log_weights) @ mixture.means


def sample(key, mixture, shape):
  """Draws [*shape, D] points: a component k ~ w, then mu_k + L_k z with L_k L_k^T = S_k."""
  k_comp, k_noise = jax.random.split(key)
  comp = jax.random.categorical(k_comp, mixture.log_weights, shape=shape)
  noise = jax.random.normal(k_noise, (*shape, mixture.means.shape[-1]), mixture.means.dtype)
  chol = jnp.linalg.cholesky(mixture.covs)
  return mixture.means[comp] + jnp.einsum("...de,...e->...d", chol[comp], noise)


def kl_to_base(mixture, direction, eta):
  """KL(pi_r || pi0) = E_{pi_r}[r] / eta - Lambda(1/eta), exact for the linear reward r(a) = <c, a>."""
  tilted = tilt(mixture, direction, eta)
  return mean(tilted) @ direction / eta - jax.nn.logsumexp(tilt_log_weights(mixture, direction, eta))


def grid_points(low, high, shape):
  """A regular 2-D grid: (points [shape[1], shape[0], 2], cell area, xs, ys), for grid_log_density."""
  xs, ys = np.linspace(low[0], high[0], shape[0]), np.linspace(low[1], high[1], shape[1])
  return jnp.asarray(np.stack(np.meshgrid(xs, ys, indexing="xy"), -1)), (xs[1] - xs[0]) * (ys[1] - ys[0]), xs, ys


def grid_log_density(log_unnormalized, cell_area):
  """Normalizes log densities given on a regular grid by a Riemann sum: log p - log sum(p) - log(area)."""
  return log_unnormalized - jax.nn.logsumexp(log_unnormalized) - jnp.log(cell_area)


def pool_acceptance(key, proposal, direction, coef, num_candidates, num_pools):
  """Monte Carlo acceptance of one rejection-sampling pass with the pool's maximum as the envelope.

  The reward <c, a> is unbounded on R^D, so no finite M bounds pi0 exp(r / coef) / pi0; as in RSO
  (Liu et al. 2023, Algorithm 1) the envelope is the best reward among the K candidates: candidate i is
  accepted with probability exp((r_i - max_j r_j) / coef). Per pool the expected accepted fraction is
  mean_i exp((r_i - max_j r_j) / coef); this returns its mean and standard error over pools.

  Args:
    key: PRNG key.
    proposal: GaussianMixture the candidates come from.
    direction: [D] c.
    coef: the rejection-sampling coefficient > 0 (the tilt is r / coef).
    num_candidates: K >= 1, static.
    num_pools: number of independent pools, static.

  Returns:
    (mean, standard error) of the acceptance fraction.
  """
  _checks.check_positive("coef", coef)
  _checks.check_positive_int("num_candidates", num_candidates)
  _checks.check_positive_int("num_pools", num_pools)
  reward = sample(key, proposal, (num_pools, num_candidates)) @ direction
  per_pool = jnp.mean(jnp.exp((reward - jnp.max(reward, -1, keepdims=True)) / coef), -1)
  return jnp.mean(per_pool), jnp.std(per_pool) / jnp.sqrt(num_pools)
