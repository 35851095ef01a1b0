"""Seeds per second of online GSHF (Algorithm 2, T iterations of m pairs) on the linear bandit: one jitted,
vmapped JAX call over seeds vs a per-seed NumPy/SciPy loop doing the same work (each iteration: the
constrained MLE by SciPy SLSQP, the Gibbs policy, for Option II the enhancer of Eq. (7)-(8) by SciPy
SLSQP from 8 starts, and the sampling). The loop replays the JAX run's batches so that both fit the same
data: the main policies must agree, and the enhancer objectives are compared.

  python benchmarks/bandit_online.py [--seeds N] [--baseline-seeds N] [--iterations T] [--batch-size M]

Prints Markdown rows; copy them into benchmarks/RESULTS.md with the device name.
"""

import argparse
import time

import jax
import numpy as np
from scipy import stats
from scipy.optimize import minimize

jax.config.update("jax_enable_x64", True)

from bandit_sim import env as bandit  # noqa: E402
from bandit_sim import online  # noqa: E402
from bandit_sim.experiments._common import ENV, behaviour_policy  # noqa: E402

BETA, LAM, N_OFF = 1.0, 1.0, 50


def jax_runs(option, iterations, batch_size):
  """jit(vmap) over seeds' keys of: an instance, D_off missing pi*'s favourites, Algorithm 2."""
  def one(key):
    k_env, k_off, k_run = jax.random.split(key, 3)
    env = bandit.make_linear_bandit(k_env, **ENV)
    misses = behaviour_policy(env, 2)
    d_off = bandit.collect_preferences(k_off, env, misses, misses, N_OFF)
    result = online.online_gshf(k_run, env, option=option, num_iterations=iterations, batch_size=batch_size,
                                beta=BETA, lam=LAM, offline_data=d_off)
    return env, d_off, result
  return jax.jit(jax.vmap(one))


def gibbs(ref_logp, reward, eta):
  logits = ref_logp + reward / eta
  p = np.exp(logits - logits.max(-1, keepdims=True))
  return p / p.sum(-1, keepdims=True)


def scipy_mle(dphi, y, bound):
  def nll(t):
    z = dphi @ t
    return np.mean(np.logaddexp(0, -z) * y + np.logaddexp(0, z) * (1 - y))

  def grad(t):
    return dphi.T @ (1 / (1 + np.exp(-dphi @ t)) - y) / len(y)

  return minimize(nll, np.zeros(dphi.shape[1]), jac=grad, method="SLSQP",
                  constraints=[{"type": "ineq", "fun": lambda t: bound ** 2 - t @ t, "jac": lambda t: -2 * t}],
                  options={"ftol": 1e-12, "maxiter": 500}).x


def scipy_enhancer(features, ref_logp, eta, bound, theta1, cov, ctx, rng):
  """argmax of beta sum_i ||phi(x_i, pi) - phi(x_i, pi1)||_{Sigma^-1} s.t. eta sum_i KL(pi || pi1) <= it."""
  phi = features[ctx]
  q = gibbs(ref_logp, features @ theta1, eta)[ctx]
  mean_q = np.einsum("ik,ikd->id", q, phi)
  inv = np.linalg.inv(cov)

  def terms(theta):
    p = gibbs(ref_logp, features @ theta, eta)[ctx]
    v = np.einsum("ik,ikd->id", p, phi) - mean_q
    norms = np.sqrt(np.maximum(np.einsum("id,de,ie->i", v, inv, v), 0.0))
    return BETA * norms.sum(), eta * stats.entropy(p, q, axis=-1).sum()

  best, best_theta = 0.0, theta1
  for _ in range(8):
    start = theta1 + rng.normal(size=theta1.shape) * rng.choice([0.05, 0.3, 1.0])
    res = minimize(lambda th: -terms(th)[0], start, method="SLSQP", options={"maxiter": 100},
                   constraints=[{"type": "ineq", "fun": lambda th: np.subtract(*terms(th))},
                                {"type": "ineq", "fun": lambda th: bound ** 2 - th @ th}])
    gam, kl = terms(res.x)
    if kl <= gam + 1e-7 and res.x @ res.x <= bound ** 2 + 1e-7 and gam > best:  # SLSQP's feasibility tolerance
      best, best_theta = gam, res.x
  return best_theta, best


def numpy_seed(env, d_off, history, option, batch_size, rng):
  """Algorithm 2 for one seed, replaying the JAX run's batches; returns (max |pi1 diff|, enhancer objectives)."""
  features, ref_logp, eta, bound = (np.asarray(v) for v in (env.features, env.ref_logp, env.eta, env.bound))
  d0 = np.asarray(env.context_probs)
  r_star = features @ np.asarray(env.theta_star)
  data = [np.asarray(v) for v in d_off]
  max_diff, objectives = 0.0, []
  for t in range(history.main_logp.shape[0]):
    ctx, a1, a2, y = data
    dphi = features[ctx, a1] - features[ctx, a2]
    theta = scipy_mle(dphi, y, float(bound))
    main = gibbs(ref_logp, features @ theta, float(eta))
    max_diff = max(max_diff, float(np.abs(main - np.exp(np.asarray(history.main_logp[t]))).max()))
    rng.choice(len(d0), size=batch_size, p=d0)  # the loop's own context draw (timed); the enhancer uses
    batch_ctx = np.asarray(history.data.ctx[t])  # the JAX run's contexts, so the objectives compare
    if option == "II":
      cov = LAM * np.eye(dphi.shape[1]) + dphi.T @ dphi / batch_size
      theta2, objective = scipy_enhancer(features, ref_logp, float(eta), float(bound), theta, cov, batch_ctx, rng)
      objectives.append(objective)
      enhancer = gibbs(ref_logp, features @ theta2, float(eta))
    else:
      enhancer = np.exp(ref_logp)
    # The loop's own sampling (timed), then the JAX run's batch is appended so both fit the same data.
    b1 = np.array([rng.choice(main.shape[1], p=main[x]) for x in batch_ctx])
    b2 = np.array([rng.choice(main.shape[1], p=enhancer[x]) for x in batch_ctx])
    rng.random(batch_size) < 1 / (1 + np.exp(-(r_star[batch_ctx, b1] - r_star[batch_ctx, b2])))
    data = [np.concatenate([old, np.asarray(new[t])]) for old, new in zip(data, history.data)]
  return max_diff, objectives


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--seeds", type=int, default=100)
  parser.add_argument("--baseline-seeds", type=int, default=10, help="seeds the slow loop runs (timed per seed)")
  parser.add_argument("--iterations", type=int, default=10)
  parser.add_argument("--batch-size", type=int, default=20)
  args = parser.parse_args()
  keys = jax.random.split(jax.random.key(0), args.seeds)
  print(f"device: {jax.devices()[0].device_kind}, jax {jax.__version__}, float64\n")
  print("| benchmark | JAX jit+vmap | NumPy/SciPy per-seed loop | speed-up | max |Δ π1_t| | enhancer objective JAX / SciPy |")
  print("| --- | --- | --- | --- | --- | --- |")
  for option in ("I", "II"):
    run = jax_runs(option, args.iterations, args.batch_size)
    start = time.perf_counter()
    out = jax.block_until_ready(run(keys))
    t_first = time.perf_counter() - start
    times = []
    for _ in range(2):
      start = time.perf_counter()
      out = jax.block_until_ready(run(keys))
      times.append(time.perf_counter() - start)
    t_jax = min(times)
    envs, d_offs, results = out
    rng = np.random.default_rng(0)
    diffs, ratios = [], []
    start = time.perf_counter()
    for i in range(args.baseline_seeds):
      pick = lambda tree: jax.tree.map(lambda v: v[i], tree)
      diff, objectives = numpy_seed(pick(envs), pick(d_offs), pick(results.history), option, args.batch_size, rng)
      diffs.append(diff)
      ratios += [j / s for j, s in zip(np.asarray(results.history.enhancer_objective[i]), objectives) if s > 1e-9]
    t_np = (time.perf_counter() - start) / args.baseline_seeds
    ratio = f"median {np.median(ratios):.3f}, min {np.min(ratios):.3f}" if ratios else "-"
    print(f"| online GSHF Option {option}, T={args.iterations}, m={args.batch_size}, n_off={N_OFF}, {args.seeds} seeds "
          f"(first call incl. compile {t_first:.1f} s) | {args.seeds / t_jax:.1f} seeds/s | {1 / t_np:.2f} seeds/s "
          f"({args.baseline_seeds} seeds) | {t_np * args.seeds / t_jax:.0f}x | {max(diffs):.1e} | {ratio} |")


if __name__ == "__main__":
  main()
