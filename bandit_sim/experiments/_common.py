"""What every experiment shares: instance presets, behaviour (coverage) policies, mapping a function over
seeds, slope fits, paired differences and the significance rule, claim rows, and plot setup.

Experiments import this module and the library (`bandit_sim.env`, `offline`, `online`, `rso`, `nlhf`,
`mixture`, `gshf_jax`); never each other.
"""

import math
import os
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

import gshf_jax as g
from bandit_sim import env as bandit
from bandit_sim import offline, online
from gshf_jax.workarounds import SEED_CHUNK

# The instance of the offline, online, hybrid, regret and coverage experiments.
ENV = dict(num_contexts=10, num_actions=8, dim=4, bound=2.0, eta=0.5)
LAM, DELTA = 1.0, 0.05
COVERAGES = ("pi0", "covers_pi_star", "misses_pi_star")


KINDS = ("sanity check", "finding", "measurement")


class Claim(NamedTuple):
  """One row of a summary: the paper's claim, what was measured, the verdict, and its kind (KINDS) with a
  note. A *sanity check* holds by construction (a theorem or an identity of the code): the note says why,
  and a failure means a bug. A *finding* could have come out otherwise: the note says what would have
  falsified it. A *measurement* reports numbers that other rows test, and claims nothing."""
  claim: str
  measured: str
  verdict: str
  kind: str
  note: str


def sanity_check(claim: str, measured: str, verdict: str, why: str) -> Claim:
  """A row that holds by construction; `why`: the theorem or identity that makes it so."""
  return Claim(claim, measured, verdict, "sanity check", f"true by construction ({why}); guards the code")


def finding(claim: str, measured: str, verdict: str, falsified_by: str) -> Claim:
  """A row that could have come out otherwise; `falsified_by`: the outcome that would have contradicted it."""
  return Claim(claim, measured, verdict, "finding", f"falsified if {falsified_by}")


def measurement(claim: str, measured: str, note: str = "numbers the other rows compare") -> Claim:
  """A row of numbers with no verdict of its own."""
  return Claim(claim, measured, "measured", "measurement", note)


def behaviour_policy(env, coverage, favourite_logp=None):
  """The policy both responses of D_off are drawn from (coverage is an index into COVERAGES, traced):
  0 "pi0": the reference policy, broad coverage; 1: the comparator itself (`favourite_logp`, default pi*
  of the linear bandit), so the data cover it and little else; 2: pi0 restricted to the actions outside
  the comparator's two favourites, which D_off then never shows (Appendix E.1)."""
  star = bandit.optimal_logp(env) if favourite_logp is None else favourite_logp
  rank = jnp.argsort(jnp.argsort(-star, axis=-1), axis=-1)  # 0 = the comparator's favourite
  misses = jax.nn.log_softmax(jnp.where(rank < 2, -jnp.inf, env.ref_logp), axis=-1)
  return jnp.stack([env.ref_logp, star, misses])[coverage]


def pad_features(env, dim):
  """The same instance embedded in R^dim: zero feature and theta* coordinates leave every reward, the
  MLE (its minimal-norm solution) and Gamma unchanged, so instances of several d share one compilation."""
  pad = dim - env.features.shape[-1]
  return env._replace(features=jnp.pad(env.features, ((0, 0), (0, 0), (0, pad))),
                      theta_star=jnp.pad(env.theta_star, (0, pad)))


def stack_trees(trees):
  """Stacks a list of pytrees of the same structure along a new leading axis."""
  return jax.tree.map(lambda *leaves: jnp.stack(leaves), *trees)


def per_seed(fn: Callable) -> Callable:
  """jit(vmap(fn)) over the first argument (the seeds' keys); the other arguments are shared."""
  return jax.jit(jax.vmap(fn, in_axes=(0, *([None] * (fn.__code__.co_argcount - 1)))))


def map_seeds(batched: Callable, keys, *args, chunk: int = SEED_CHUNK) -> Any:
  """batched(keys, *args) (a per_seed function) in chunks of `chunk` seeds with one compilation (the last
  chunk is padded), as NumPy arrays. Chunked because of the XLA CPU stall in gshf_jax.workarounds, and so
  that the working memory does not grow with the number of seeds; the results themselves are checked to
  fit in memory (results_fit) before any chunk runs."""
  n = keys.shape[0]
  chunk = min(chunk, n)
  padded = jnp.concatenate([keys, jnp.repeat(keys[-1:], -n % chunk, axis=0)])
  results_fit(jax.eval_shape(batched, padded[:chunk], *args), n)
  parts = [jax.tree.map(np.asarray, batched(padded[i:i + chunk], *args)) for i in range(0, n, chunk)]
  return jax.tree.map(lambda *leaves: np.concatenate(leaves)[:n], *parts)


def over_seeds(fn: Callable, key, seeds: int, *args) -> Any:
  """fn(key, *args) for `seeds` keys split from `key` through map_seeds, NumPy out."""
  return map_seeds(per_seed(lambda k: fn(k, *args)), jax.random.split(key, seeds))


def results_fit(shapes, seeds: int) -> None:
  """Raises MemoryError (one line naming --seeds) when `seeds` rows of the per-seed results whose chunk
  shapes are `shapes` (jax.ShapeDtypeStruct leaves, seeds first), twice over (the chunks and their
  concatenation), would not fit in the machine's physical memory."""
  per_seed = sum(math.prod(s.shape[1:]) * s.dtype.itemsize for s in jax.tree.leaves(shapes))
  need = 2 * per_seed * seeds
  memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
  if need > memory:
    raise MemoryError(f"--seeds {seeds}: the per-seed arrays alone need about {need / 2 ** 30:.1f} GiB, more "
                      f"than this machine's {memory / 2 ** 30:.1f} GiB; use fewer seeds")


def mean_and_stderr(values) -> tuple[float, float]:
  """Mean and standard error of the mean (ddof = 1)."""
  return float(np.mean(values)), float(np.std(values, ddof=1) / math.sqrt(len(values)))


def paired(a, b) -> tuple[float, float]:
  """Mean and standard error of a - b over seeds (a paired difference)."""
  return mean_and_stderr(np.asarray(a) - np.asarray(b))


def significantly_negative(mean_se) -> bool:
  """The significance rule of every summary: the mean is more than 2 standard errors below 0."""
  return mean_se[0] + 2 * mean_se[1] < 0


def significantly_positive(mean_se) -> bool:
  """The mean is more than 2 standard errors above 0."""
  return mean_se[0] - 2 * mean_se[1] > 0


def sign_verdict(mean_se, negative: str, positive: str, neither: str = "no significant difference") -> str:
  """`negative` / `positive` when the difference is significantly below / above 0, else `neither`."""
  if significantly_negative(mean_se):
    return negative
  return positive if significantly_positive(mean_se) else neither


def fmt(mean_se, digits: int = 4) -> str:
  """'mean±se' with `digits` decimals."""
  return f"{mean_se[0]:.{digits}f}±{mean_se[1]:.{digits}f}"


def log_log_slope(sizes, errors, rng, resamples: int = 1000):
  """Least-squares slope of log mean error on log n, with a 95% bootstrap interval over seeds.
  errors: [len(sizes), seeds]."""
  x = np.log(sizes)
  slope = np.polyfit(x, np.log(errors.mean(1)), 1)[0]
  boot = []
  for _ in range(resamples):
    idx = rng.integers(0, errors.shape[1], errors.shape[1])
    boot.append(np.polyfit(x, np.log(errors[:, idx].mean(1)), 1)[0])
  return float(slope), [float(np.percentile(boot, 2.5)), float(np.percentile(boot, 97.5))]


def confidence_radius(dim, delta=DELTA, bound=ENV["bound"], lam=LAM, **kwargs) -> float:
  """Lemma G.3's beta with C = 1 (gshf_jax.confidence_radius) as a float."""
  return float(g.confidence_radius(dim, delta, bound, lam, **kwargs))


def theory_parameters(T, m=1, dim=ENV["dim"], bound=ENV["bound"], delta=DELTA) -> dict:
  """The radius and ridge the theorems prescribe, their O / Theta / Omega constants set to 1:
  beta = sqrt(d log(T/delta) / (gamma^2 m)) and lambda = d log(T/delta) / (m gamma^2 B^2), gamma of
  Assumption 2.1 (Theorem 4.4 with batch m; Theorems 4.2, B.1 and D.2 with m = 1)."""
  gamma = float(g.gamma(bound))
  log_term = dim * math.log(T / delta)
  return {"beta": math.sqrt(log_term / (gamma ** 2 * m)), "lam": log_term / (m * gamma ** 2 * bound ** 2), "gamma": gamma}


def pyplot():
  """matplotlib.pyplot on the non-interactive Agg backend (experiments only write PNG files)."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  return plt


# The online, hybrid and regret experiments (Algorithm 2).
ONLINE_BETA = 1.0  # the beta of Eq. (7) in every run; Lemma 4.3's beta (C = 1) is reported beside it
FAST_ENHANCER = dict(enhancer_starts=2, enhancer_steps=60)  # for the long runs (within ~2.5% of SciPy)
ENHANCER_NAMES = {"uncertainty": "Option II", "reference": "Option I (π0)", "random_pairs": "random pairs",
                  "best_of_n": "best-of-4", "temperature": "temperature 2", "variant": "previous iterate"}


def selected_offline_only(k_data, k_val, env, behaviour, d_off, num_iterations, batch_size):
  """The equal-budget baseline with Algorithm 2's selection: T * m more (behaviour, behaviour) pairs; the
  Gibbs policies of the MLE on D_off and the first t * m of them, t = 1..T, scored by the same validation
  estimate (online.validation_value, same key, so the same prompts and noise as Algorithm 2's iterates).
  Returns J(pi*) - J of (the selected policy, the one on all the data), and D_off with the new pairs."""
  data = bandit.collect_preferences(k_data, env, behaviour, behaviour, num_iterations * batch_size)
  data = jax.tree.map(lambda a, b: jnp.concatenate([a, b]), d_off, data)
  dphi, n_off = bandit.feature_differences(env, data), d_off.y.shape[0]
  ends = n_off + batch_size * jnp.arange(1, num_iterations + 1)
  logps = jax.vmap(lambda end: offline.gibbs_class_logp(
      env, g.bt_mle(dphi, data.y, env.bound, jnp.arange(data.y.shape[0]) < end)))(ends)
  values = jax.vmap(lambda lp: online.validation_value(k_val, env, lp, 1000))(logps)
  return bandit.suboptimality(env, logps[jnp.argmax(values)]), bandit.suboptimality(env, logps[-1]), data
