"""Figure 1's tilted Gaussian mixture against a grid normalization, SciPy and Monte Carlo; the pool
acceptance of Figure 3 against a closed form for two candidates."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from bandit_sim import mixture

C = jnp.array([1.0, 0.0])


def _grid(low=(-7.0, -6.0), high=(11.0, 6.0), shape=(361, 241)):
  xs, ys = np.linspace(low[0], high[0], shape[0]), np.linspace(low[1], high[1], shape[1])
  points = np.stack(np.meshgrid(xs, ys, indexing="xy"), -1)
  return jnp.asarray(points), (xs[1] - xs[0]) * (ys[1] - ys[0])


def _random_mixture(rng, components=3):
  a = rng.normal(size=(components, 2, 2)) * 0.5
  covs = a @ np.swapaxes(a, 1, 2) + 0.1 * np.eye(2)
  weights = rng.dirichlet(np.ones(components))
  return mixture.GaussianMixture(jnp.log(weights), jnp.asarray(rng.normal(size=(components, 2))), jnp.asarray(covs))


def test_log_density_matches_scipy():
  rng = np.random.default_rng(0)
  mix = _random_mixture(rng)
  points = rng.normal(size=(50, 2)) * 2
  expected = np.log(sum(np.exp(w) * stats.multivariate_normal(m, s).pdf(points)
                        for w, m, s in zip(np.asarray(mix.log_weights), np.asarray(mix.means), np.asarray(mix.covs))))
  np.testing.assert_allclose(mixture.log_density(mix, jnp.asarray(points)), expected, rtol=1e-12)


@pytest.mark.parametrize("inverse_eta", [0.5, 1.0, 10.0])
def test_closed_form_tilt_equals_grid_normalization(inverse_eta):
  mix = mixture.figure_one_mixture()
  points, area = _grid()
  grid = jnp.exp(mixture.grid_log_density(mixture.log_density(mix, points) + points @ C * inverse_eta, area))
  closed = jnp.exp(mixture.log_density(mixture.tilt(mix, C, 1 / inverse_eta), points))
  assert float(jnp.max(jnp.abs(grid - closed))) <= 1e-9 * float(jnp.max(closed))
  assert float(jnp.sum(closed) * area) == pytest.approx(1.0, abs=1e-9)  # the grid holds all the mass


def test_tilt_of_random_mixtures_in_random_directions():
  rng = np.random.default_rng(1)
  points, area = _grid((-12.0, -12.0), (12.0, 12.0), (481, 481))
  for _ in range(3):
    mix, c, eta = _random_mixture(rng), jnp.asarray(rng.normal(size=2)), float(rng.uniform(0.7, 3.0))
    grid = jnp.exp(mixture.grid_log_density(mixture.log_density(mix, points) + points @ c / eta, area))
    closed = jnp.exp(mixture.log_density(mixture.tilt(mix, c, eta), points))
    assert float(jnp.sum(jnp.abs(grid - closed)) * area) < 1e-8
    # The log normalizer: log E_{pi0} exp(<c, a> / eta) by Monte Carlo.
    a = mixture.sample(jax.random.key(2), mix, (400_000,))
    mc = np.log(np.mean(np.exp(np.asarray(a @ c / eta))))
    assert float(jax.nn.logsumexp(mixture.tilt_log_weights(mix, c, eta))) == pytest.approx(mc, abs=0.03)


def test_sampling_moments_and_tilted_mean():
  mix = mixture.figure_one_mixture()
  a = np.asarray(mixture.sample(jax.random.key(0), mix, (200_000,)))
  np.testing.assert_allclose(a.mean(0), mixture.mean(mix), atol=0.02)
  # The tilted mean by self-normalized importance weights from pi0 samples.
  w = np.exp(a @ np.asarray(C) / 1.0)
  np.testing.assert_allclose((w[:, None] * a).sum(0) / w.sum(), mixture.mean(mixture.tilt(mix, C, 1.0)), atol=0.03)
  assert mixture.tilt(mix, C, float("inf")) is mix


def _folded_normal_mgf(m, s, beta):
  """E exp(-|Z| / beta) for Z ~ N(m, s^2)."""
  t = 1 / beta
  return (np.exp(-m * t + s ** 2 * t ** 2 / 2) * stats.norm.cdf(m / s - s * t)
          + np.exp(m * t + s ** 2 * t ** 2 / 2) * stats.norm.cdf(-m / s - s * t))


def test_pool_acceptance_two_candidates_closed_form():
  """With K = 2 a pool accepts (1 + exp(-|r1 - r2| / coef)) / 2 on average; r1 - r2 is a mixture of
  normals over component pairs."""
  mix = mixture.figure_one_mixture()
  w, mu, cov = (np.exp(np.asarray(mix.log_weights)), np.asarray(mix.means)[:, 0], np.asarray(mix.covs)[:, 0, 0])
  for coef in (0.3, 1.0):
    expected = 0.5 * (1 + sum(w[j] * w[k] * _folded_normal_mgf(mu[j] - mu[k], np.sqrt(cov[j] + cov[k]), coef)
                               for j in range(5) for k in range(5)))
    mean, se = mixture.pool_acceptance(jax.random.key(3), mix, C, coef, 2, 200_000)
    assert abs(float(mean) - expected) < 4 * float(se)


def test_bad_arguments():
  mix = mixture.figure_one_mixture()
  with pytest.raises(ValueError, match="eta"):
    mixture.tilt(mix, C, 0.0)
  with pytest.raises(ValueError, match="direction"):
    mixture.tilt(mix, jnp.ones(3), 1.0)
  with pytest.raises(ValueError, match="num_candidates"):
    mixture.pool_acceptance(jax.random.key(0), mix, C, 1.0, 0, 10)
