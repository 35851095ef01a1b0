"""Seeds per second of offline GSHF (Option II) on the linear bandit: the jitted, vmapped JAX path vs a
per-seed NumPy/SciPy loop on the same instances and data (MLE by scipy.optimize.minimize with SLSQP and
the norm constraint, the way public RLHF-theory code solves it with a generic solver).

  python benchmarks/bandit_offline.py [--seeds N] [--n N]

Prints a Markdown row; copy it into benchmarks/RESULTS.md with the device name.
"""

import argparse
import time

import jax
import numpy as np
from scipy.optimize import minimize

jax.config.update("jax_enable_x64", True)

import bandit_sim as b  # noqa: E402
from bandit_sim import offline  # noqa: E402
from bandit_sim.experiments._common import ENV  # noqa: E402

BETA, LAM = 1.0, 1.0


def make_instances(key, seeds, n):
  def one(k):  # the offline experiment's instances, D_off from pi0
    k_env, k_data = jax.random.split(k)
    env = b.make_linear_bandit(k_env, **ENV)
    return env, b.collect_preferences(k_data, env, env.ref_logp, env.ref_logp, n)
  return jax.jit(jax.vmap(one))(jax.random.split(key, seeds))


def jax_path(envs, datas):
  def one(env, data):
    logp = offline.offline_gshf(env, data, option="II", beta=BETA, lam=LAM)
    return b.suboptimality(env, logp)
  return jax.vmap(one)(envs, datas)


def numpy_seed(features, theta_star, ref_logp, d0, eta, bound, ctx, a1, a2, y):
  dphi = features[ctx, a1] - features[ctx, a2]

  def nll(t):
    z = dphi @ t
    return np.mean(np.logaddexp(0, -z) * y + np.logaddexp(0, z) * (1 - y))

  def grad(t):
    return dphi.T @ (1 / (1 + np.exp(-dphi @ t)) - y) / len(y)

  res = minimize(nll, np.zeros(dphi.shape[1]), jac=grad, method="SLSQP",
                 constraints=[{"type": "ineq", "fun": lambda t: bound ** 2 - t @ t, "jac": lambda t: -2 * t}],
                 options={"ftol": 1e-12, "maxiter": 500})
  cov = LAM * np.eye(dphi.shape[1]) + dphi.T @ dphi
  nu = d0 @ np.einsum("xk,xkd->xd", np.exp(ref_logp), features)
  diff = features - nu
  gamma = np.sqrt(np.einsum("xkd,xkd->xk", diff, np.linalg.solve(cov, diff.reshape(-1, diff.shape[-1]).T).T.reshape(diff.shape)))

  def gibbs(reward):
    logits = ref_logp + reward / eta
    logits = logits - logits.max(-1, keepdims=True)
    p = np.exp(logits)
    return p / p.sum(-1, keepdims=True)

  def value(p):
    r = features @ theta_star
    kl = np.sum(np.where(p > 0, p * (np.log(np.maximum(p, 1e-300)) - ref_logp), 0.0), -1)
    return d0 @ (np.sum(p * r, -1) - eta * kl)

  p_hat = gibbs(features @ res.x - BETA * gamma)
  return value(gibbs(features @ theta_star)) - value(p_hat)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--seeds", type=int, default=200)
  parser.add_argument("--n", type=int, default=200)
  args = parser.parse_args()
  envs, datas = make_instances(jax.random.key(0), args.seeds, args.n)
  run = jax.jit(jax_path)
  jax.block_until_ready(run(envs, datas))  # compile
  times = []
  for _ in range(3):
    start = time.perf_counter()
    sub_jax = jax.block_until_ready(run(envs, datas))
    times.append(time.perf_counter() - start)
  t_jax = min(times)
  arrays = [np.asarray(v) for v in (*envs, *datas)]
  start = time.perf_counter()
  sub_np = np.array([numpy_seed(*(a[i] for a in arrays)) for i in range(args.seeds)])
  t_np = time.perf_counter() - start
  agree = float(np.max(np.abs(sub_np - np.asarray(sub_jax))))
  print(f"device: {jax.devices()[0].device_kind}, jax {jax.__version__}, float64\n")
  print("| benchmark | JAX jit+vmap | NumPy/SciPy per-seed loop | speed-up | max |Δ suboptimality| |")
  print("| --- | --- | --- | --- | --- |")
  print(f"| offline GSHF Option II, {args.seeds} seeds, n_off={args.n}, X={ENV['num_contexts']}, "
        f"K={ENV['num_actions']}, d={ENV['dim']} | "
        f"{args.seeds / t_jax:.0f} seeds/s | {args.seeds / t_np:.0f} seeds/s | {t_np / t_jax:.0f}x | {agree:.1e} |")


if __name__ == "__main__":
  main()
