"""The experiments of `python -m bandit_sim.experiment`, one module each. Every module has

  compute(key, *, seeds, quick, progress) -> (results, arrays)   the measurements (results go to summary.json)
  claims(results) -> list[Claim]                                  the summary rows read off the results
  figures(results, arrays) -> {filename: matplotlib figure}       the plots

and imports only the library and `_common`. To add an experiment, write such a module and add it below.
"""

from bandit_sim.experiments import core, coverage, gibbs, hybrid, nash, offline, online, regret, rejection

EXPERIMENTS = {
    "core": core,
    "offline": offline,
    "online": online,
    "hybrid": hybrid,
    "regret": regret,
    "gibbs": gibbs,
    "rejection": rejection,
    "coverage": coverage,
    "nash": nash,
}
