"""Elliptical uncertainty of the linear BT reward (Section 2.3, Lemma G.3, Theorem 3.1, Section 4)."""

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from gshf_jax import _checks
from gshf_jax.preference import gamma


def covariance(dphi: ArrayLike, lam: ArrayLike, mask: ArrayLike | None = None, scale: ArrayLike = 1.0) -> jax.Array:
  """Sigma = lam * I + scale * sum_i dphi_i dphi_i^T (Section 2.3).

  `scale = 1` gives Sigma_D of Section 2.3; `scale = 1/m` with data of m pairs per batch gives the
  normalized Sigma_{t,m} of Section 4.

  Args:
    dphi: [n, d] feature differences.
    lam: lambda > 0.
    mask: optional [n], 0 drops a row.
    scale: > 0.

  Returns:
    [d, d] positive-definite matrix.
  """
  _checks.check_shape("dphi", dphi, (None, None))
  _checks.check_positive("lam", lam)
  _checks.check_positive("scale", scale)
  dphi = jnp.asarray(dphi)
  if mask is not None:
    _checks.check_shape("mask", mask, (dphi.shape[0],))
    dphi = dphi * jnp.asarray(mask, dphi.dtype)[:, None]
  d = dphi.shape[1]
  return lam * jnp.eye(d, dtype=dphi.dtype) + scale * (dphi.T @ dphi)


def elliptical_norm(v: ArrayLike, cov: ArrayLike) -> jax.Array:
  """||v||_{Sigma^{-1}} = sqrt(v^T Sigma^{-1} v), batched over v's leading axes, via Cholesky; its
  gradient at v = 0 is 0 (a subgradient of the norm there), not NaN.

  Args:
    v: [..., d] vectors.
    cov: [d, d] positive-definite Sigma.

  Returns:
    [...] norms; NaN (under jit) where v holds NaN or cov is not positive definite, which raise
    ValueError when the arguments are concrete.
  """
  _checks.check_shape("cov", cov, (None, None))
  d = cov.shape[0]
  if np.ndim(v) == 0 or np.shape(v)[-1] != d or cov.shape[1] != d:
    raise ValueError(f"v [..., d] and cov [d, d] must agree on d; got v {np.shape(v)}, cov {np.shape(cov)}")
  _checks.check_no_nan("v", v)
  concrete_cov = _checks.concrete(cov)
  if concrete_cov is not None:
    _checks.check_finite("cov", concrete_cov)
    try:
      np.linalg.cholesky(concrete_cov)
    except np.linalg.LinAlgError:
      raise ValueError(f"cov must be positive definite; its least eigenvalue is "
                       f"{np.linalg.eigvalsh((concrete_cov + concrete_cov.T) / 2).min():.3g}") from None
  v = jnp.asarray(v)
  chol = jnp.linalg.cholesky(cov)
  flat = v.reshape(-1, d).T  # [d, N]
  w = jax.scipy.linalg.solve_triangular(chol, flat, lower=True)  # L w = v, so |w|^2 = v^T Sigma^-1 v
  squared = jnp.sum(w ** 2, axis=0)
  # sqrt through a where: exactly 0 at v = 0 with gradient 0 (a valid subgradient) instead of NaN.
  positive = squared > 0
  norms = jnp.where(positive, jnp.sqrt(jnp.where(positive, squared, 1.0)), 0.0)
  # NaN input, or a Sigma that is not positive definite (its Cholesky factor holds NaN), gives NaN, never 0.
  norms = jnp.where(jnp.isnan(squared) | jnp.any(jnp.isnan(chol)), jnp.nan, norms)
  return norms.reshape(v.shape[:-1])


def confidence_radius(dim: int, delta: float, bound: ArrayLike, lam: ArrayLike, n: int = None) -> jax.Array:
  """beta of Lemma G.3 / Theorem 3.1 with the unspecified absolute constant C set to 1.

  With n = None, the radius for the unnormalized Sigma_D = lam I + sum dphi dphi^T:
      beta = sqrt((d + log(1/delta)) / gamma^2 + lam * B^2).
  With n given, the radius for the normalized Sigma_{D}/n of Section 4 (covariance(..., lam, scale=1/n),
  i.e. Sigma_D with lam' = n * lam, as in the proof of Theorem 4.4):
      beta = sqrt((d + log(1/delta)) / (gamma^2 n) + lam * B^2).
  C = 1 is a choice, not a theorem: the simulator reports how often theta* actually lies inside.

  Args:
    dim: feature dimension d >= 1.
    delta: failure probability in (0, 1).
    bound: B > 0.
    lam: lambda > 0.
    n: optional number of samples >= 1.

  Returns:
    scalar beta.
  """
  _checks.check_positive_int("dim", dim)
  _checks.check_in_range("delta", delta, 0.0, 1.0)
  _checks.check_positive("delta", delta)
  _checks.check_positive("bound", bound)
  _checks.check_positive("lam", lam)
  stat = (dim + jnp.log(1.0 / delta)) / gamma(bound) ** 2
  if n is not None:
    _checks.check_positive("n", n)
    stat = stat / n
  return jnp.sqrt(stat + lam * bound ** 2)
