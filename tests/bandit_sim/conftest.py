"""Independent references shared by the bandit_sim tests: nothing here imports gshf_jax."""

import numpy as np
import pytest
from scipy.optimize import NonlinearConstraint, minimize


def scipy_bt_mle_impl(dphi, y, bound):
  """argmax of Eq. (3) over ||theta|| <= bound by SciPy trust-constr."""
  dphi, y = np.asarray(dphi, float), np.asarray(y, float)

  def nll(t):
    z = dphi @ t
    return np.mean(np.logaddexp(0, -z) * y + np.logaddexp(0, z) * (1 - y))

  def grad(t):
    return dphi.T @ (1 / (1 + np.exp(-dphi @ t)) - y) / len(y)

  d = dphi.shape[1]
  res = minimize(nll, np.zeros(d), jac=grad, method="trust-constr",
                 constraints=[NonlinearConstraint(lambda t: t @ t, -np.inf, bound ** 2, jac=lambda t: 2 * t)],
                 options={"gtol": 1e-12, "xtol": 1e-12})
  return res.x


@pytest.fixture(scope="session")
def scipy_bt_mle():
  return scipy_bt_mle_impl
