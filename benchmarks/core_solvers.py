"""Benchmarks of the gshf_jax solvers against baselines run side by side in this process.

  python benchmarks/core_solvers.py [--quick]

1. bt_mle (projected Newton) vs projected gradient descent (step 1/L, optax's l2-ball projection) vs
   SciPy's trust-constr, to the same stationarity tolerance, on the ball and inside it.
2. nash_equilibrium (predictive-update extragradient) vs plain Nash-MD / magnetic mirror descent
   (pi_t+1 ∝ pi_t^(1 - a eta) pi0^(a eta) exp(a P pi_t), the same step a = 1/(1 + eta)): iterations and
   time to duality gap <= 1e-10.
3. rso_rejection_sample vmapped over prompts vs the plain-Python Algorithm 1 of Liu et al. (2023).

Prints a Markdown table; copy it into benchmarks/RESULTS.md with the device name.
"""

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

jax.config.update("jax_enable_x64", True)

import gshf_jax as g  # noqa: E402


def best_time(fn, repeats=5):
  """Median wall time of fn() after one warm-up call (compilation excluded); one run if it takes > 1 s."""
  jax.block_until_ready(fn())
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - start)
    if times[-1] > 1.0:
      break
  return statistics.median(times)


def bt_problem(n, d, seed=0, condition=1.0):
  """Random BT data; `condition` > 1 shrinks feature axis j by condition^(-j/(d-1)) (ill-conditioned Sigma)."""
  rng = np.random.default_rng(seed)
  phi = rng.normal(size=(2, n, d)) * np.logspace(0, -np.log10(condition), d)
  phi /= np.maximum(1.0, np.linalg.norm(phi, axis=-1, keepdims=True))
  dphi = phi[0] - phi[1]
  theta = rng.normal(size=d) * 2.0 / np.sqrt(d)
  y = (rng.random(n) < 1 / (1 + np.exp(-dphi @ theta))).astype(np.float64)
  return jnp.asarray(dphi), jnp.asarray(y)


def projected_gradient_mle(dphi, y, bound, tol=1e-10, max_iter=200_000):
  """Baseline: projected gradient descent on the mean NLL with step 1/L, L = lambda_max(dphi^T dphi)/(4n)."""
  n = dphi.shape[0]
  lipschitz = jnp.linalg.eigvalsh(dphi.T @ dphi / n)[-1] / 4.0
  grad_fn = jax.grad(lambda t: -g.bt_log_likelihood(t, dphi, y) / n)

  def stationarity(theta):
    return jnp.linalg.norm(theta - optax.projections.projection_l2_ball(theta - grad_fn(theta), bound))

  def body(state):
    theta, it, _ = state
    theta = optax.projections.projection_l2_ball(theta - grad_fn(theta) / lipschitz, bound)
    return theta, it + 1, stationarity(theta)

  theta0 = jnp.zeros(dphi.shape[1])
  theta, it, stat = jax.lax.while_loop(lambda s: (s[2] > tol) & (s[1] < max_iter), body,
                                       (theta0, 0, stationarity(theta0)))
  return theta, it, stat


def scipy_mle(dphi, y, bound):
  from scipy.optimize import NonlinearConstraint, minimize
  n = dphi.shape[0]
  vg = jax.jit(jax.value_and_grad(lambda t: -g.bt_log_likelihood(t, dphi, y) / n))
  ball = NonlinearConstraint(lambda t: t @ t, -np.inf, bound ** 2, jac=lambda t: 2 * t)
  return minimize(lambda t: [np.asarray(v) for v in vg(t)], np.zeros(dphi.shape[1]), jac=True,
                  method="trust-constr", constraints=[ball], options={"gtol": 1e-10, "xtol": 1e-12,
                                                                      "maxiter": 5000})


def bench_mle(quick):
  rows = []
  n, d = (2000, 8) if quick else (20000, 16)
  for where, bound, condition in (("inside", 50.0, 1.0), ("on the ball", 0.5, 1.0),
                                  ("inside, feature scales 1..1e-2", 500.0, 100.0)):
    dphi, y = bt_problem(n, d, condition=condition)
    newton = jax.jit(lambda a, b: g.bt_mle(a, b, bound, return_info=True))
    pgd = jax.jit(lambda a, b: projected_gradient_mle(a, b, bound))
    info = newton(dphi, y)
    _, pgd_iters, pgd_stat = pgd(dphi, y)
    t_newton, t_pgd = best_time(lambda: newton(dphi, y)), best_time(lambda: pgd(dphi, y))
    start = time.perf_counter()
    res = scipy_mle(dphi, y, bound)
    t_scipy = time.perf_counter() - start
    gap = np.linalg.norm(res.x - np.asarray(info.theta))
    rows.append(f"| bt_mle n={n} d={d} {where} | projected Newton: {int(info.num_iterations)} it, "
                f"stationarity {float(info.stationarity):.1e}, {t_newton * 1e3:.1f} ms | projected gradient: "
                f"{int(pgd_iters)} it, {float(pgd_stat):.1e}, {t_pgd * 1e3:.1f} ms; SciPy trust-constr "
                f"{t_scipy * 1e3:.0f} ms (‖Δθ‖ {gap:.1e}) | {t_pgd / t_newton:.1f}x vs PGD, "
                f"{t_scipy / t_newton:.0f}x vs SciPy |")
  return rows


def nash_md(ref_logp, pref, eta, tol=1e-10, max_iter=100_000):
  alpha = 1.0 / (1.0 + eta)

  def gap(logp):
    return jnp.max(g.duality_gap(logp, ref_logp, pref, eta, per_context=True))

  def body(state):
    logp, it, _ = state
    play = jnp.einsum("...ab,...b->...a", pref, jnp.exp(logp))
    logp = jax.nn.log_softmax((1 - alpha * eta) * logp + alpha * eta * ref_logp + alpha * play, axis=-1)
    return logp, it + 1, gap(logp)

  return jax.lax.while_loop(lambda s: (s[2] > tol) & (s[1] < max_iter), body, (ref_logp, 0, gap(ref_logp)))


def bench_nash(quick):
  rows = []
  rng = np.random.default_rng(1)
  x, k = (8, 8) if quick else (64, 16)
  s = rng.normal(size=(x, k, k)) * 2
  pref = jnp.asarray(1 / (1 + np.exp(-(s - np.swapaxes(s, -1, -2)))))
  ref = jnp.asarray(np.log(rng.dirichlet(np.ones(k), size=x)))

  for eta in (0.01, 0.1, 1.0):
    ours = jax.jit(lambda r, p: g.nash_equilibrium(r, p, eta))
    base = jax.jit(lambda r, p: nash_md(r, p, eta))
    _, base_it, base_gap = base(ref, pref)
    t_ours, t_base = best_time(lambda: ours(ref, pref)), best_time(lambda: base(ref, pref))
    base_note = f"{int(base_it)} it, gap {float(base_gap):.1e}"
    rows.append(f"| nash X={x} K={k} eta={eta} | extragradient: gap "
                f"{float(ours(ref, pref)[1]):.1e}, {t_ours * 1e3:.1f} ms | Nash-MD: {base_note}, "
                f"{t_base * 1e3:.1f} ms | {t_base / t_ours:.1f}x |")
  return rows


def python_rso(rng, rewards, num_samples, beta):
  candidates = {c: r for c, r in enumerate(rewards)}
  accepted = []
  while len(accepted) < num_samples:
    max_reward = max(candidates.values())
    to_remove = []
    for c, r in candidates.items():
      if rng.uniform() >= np.exp((r - max_reward) / beta):
        continue
      accepted.append(c)
      to_remove.append(c)
      if len(accepted) == num_samples:
        break
    for c in to_remove:
      candidates.pop(c)
  return accepted


def bench_rso(quick):
  prompts, k, m = (2000, 24, 6) if quick else (20000, 24, 6)
  rng = np.random.default_rng(2)
  rewards = rng.normal(size=(prompts, k))
  sample = jax.jit(lambda key, r: jax.vmap(lambda kk, rr: g.rso_rejection_sample(kk, rr, 0.5, m))(
      jax.random.split(key, r.shape[0]), r))
  rj = jnp.asarray(rewards)
  t_jax = best_time(lambda: sample(jax.random.key(0), rj))
  start = time.perf_counter()
  for row in rewards[:2000]:
    python_rso(rng, row.tolist(), m, 0.5)
  t_py = (time.perf_counter() - start) * prompts / 2000
  return [f"| rso_rejection_sample {prompts} prompts, {k} candidates, {m} accepted, beta 0.5 | "
          f"jit+vmap {t_jax * 1e3:.1f} ms | plain Python (Algorithm 1) {t_py * 1e3:.0f} ms | "
          f"{t_py / t_jax:.0f}x |"]


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--quick", action="store_true")
  args = parser.parse_args()
  print(f"device: {jax.devices()[0].device_kind} ({jax.devices()[0].platform}), jax {jax.__version__}\n")
  print("| benchmark | gshf_jax | baseline | speed-up |")
  print("| --- | --- | --- | --- |")
  for rows in (bench_mle(args.quick), bench_nash(args.quick), bench_rso(args.quick)):
    for row in rows:
      print(row, flush=True)


if __name__ == "__main__":
  main()
