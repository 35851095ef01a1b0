"""Command line: `python -m bandit_sim.experiment [NAME] [--seeds N] [--out DIR] [--quick] [--quiet]`.

With no NAME every experiment runs. Each writes into DIR/NAME/ (DIR defaults to `results/`):
`summary.md` (a table of each claim and what was measured), `summary.json` (every number) and PNG plots;
a run of several experiments also writes DIR/summary.md with all their claims. Files are written
atomically. Computation is in float64.
"""

import argparse
import datetime
import json
import os
import sys
import time

import jax
import numpy as np

from bandit_sim.experiments import EXPERIMENTS
from bandit_sim.experiments._common import results_fit
from gshf_jax import atomic
from gshf_jax.workarounds import apply_cpu_workarounds


def parse_args(argv):
  parser = argparse.ArgumentParser(prog="python -m bandit_sim.experiment", description=__doc__.split("\n")[0])
  parser.add_argument("name", nargs="?", choices=sorted(EXPERIMENTS), help="one experiment (default: all)")
  parser.add_argument("--seeds", type=int, default=200, help="random instances per setting (default 200)")
  parser.add_argument("--out", default="results", help="output folder (default results/)")
  parser.add_argument("--quick", action="store_true", help="small settings, for smoke tests")
  parser.add_argument("--quiet", action="store_true", help="no progress output")
  parser.add_argument("--seed", type=int, default=0, help="master PRNG seed (default 0)")
  args = parser.parse_args(argv)
  if args.seeds < 2:
    parser.error(f"--seeds must be an integer >= 2, got {args.seeds}")
  if not 0 <= args.seed < 2 ** 63:
    parser.error(f"--seed must be an integer in [0, 2**63), got {args.seed}")
  problem = atomic.unwritable(args.out, folder=True)
  if problem:
    parser.error(f"--out {args.out}: {problem}")
  try:  # the seeds' PRNG keys (2 x uint32 each) are the first per-seed arrays every experiment makes
    results_fit(jax.ShapeDtypeStruct((1, 2), np.uint32), args.seeds)
  except MemoryError as e:
    parser.error(str(e))
  return args


def merged_summary(path, name, name_claims, settings):
  """The aggregate summary.md at `path` with the rows of experiment `name` replaced by a rerun's rows
  (and the rerun's settings noted), so it never shows rows of a run that was redone."""
  with open(path) as f:
    lines = f.read().rstrip("\n").split("\n")
  new = summary_markdown({name: name_claims}, settings).rstrip("\n").split("\n")[6:]
  prefix = f"| {name} |"
  old = [i for i, line in enumerate(lines) if line.startswith(prefix)]
  at = old[0] if old else len(lines)
  lines = lines[:at] + new + [line for line in lines[at:] if not line.startswith(prefix)]
  note = f"Rows of `{name}` from a rerun with settings `{json.dumps(settings, sort_keys=True)}`"
  lines = [line for line in lines if not line.startswith(f"Rows of `{name}` from a rerun")]
  lines.insert(3, note)
  return "\n".join(lines) + "\n"


def summary_markdown(name_to_claims, settings):
  lines = ["# bandit_sim results", "", f"Settings: `{json.dumps(settings, sort_keys=True)}`", "",
           "| experiment | kind | claim | measured | verdict | note |", "| --- | --- | --- | --- | --- | --- |"]
  for name, claims in name_to_claims.items():
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in (name, c.kind, c.claim, c.measured, c.verdict, c.note))
              + " |" for c in claims]
  return "\n".join(lines) + "\n"


def run_experiment(name, key, *, seeds, quick, progress):
  """Runs one experiment: (results, claims, figures)."""
  module = EXPERIMENTS[name]
  results, arrays = module.compute(key, seeds=seeds, quick=quick, progress=progress)
  return results, module.claims(results), module.figures(results, arrays)


def main(argv=None):
  try:
    return run(argv)
  except KeyboardInterrupt:
    print("python -m bandit_sim.experiment: interrupted; finished experiments are in their folders",
          file=sys.stderr)
    raise SystemExit(130) from None
  except MemoryError as e:
    print(f"python -m bandit_sim.experiment: error: {e}", file=sys.stderr)
    raise SystemExit(2) from None


def run(argv=None):
  apply_cpu_workarounds()
  jax.config.update("jax_enable_x64", True)
  from tqdm import tqdm

  args = parse_args(sys.argv[1:] if argv is None else argv)
  names = [args.name] if args.name else list(EXPERIMENTS)
  bar = tqdm(total=len(names), disable=args.quiet, desc="experiments")
  progress = (lambda msg: None) if args.quiet else bar.set_postfix_str
  settings = {"seeds": args.seeds, "quick": args.quick, "seed": args.seed, "device": jax.devices()[0].device_kind,
              "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
  results, claims = {"settings": settings}, {}
  key = jax.random.key(args.seed)
  for name in names:
    start = time.perf_counter()
    out, name_claims, figures = run_experiment(name, jax.random.fold_in(key, list(EXPERIMENTS).index(name)),
                                               seeds=args.seeds, quick=args.quick, progress=progress)
    out["seconds"] = round(time.perf_counter() - start, 2)
    results[name], claims[name] = out, name_claims
    folder = os.path.join(args.out, name)
    for filename, fig in figures.items():
      atomic.save_figure(fig, os.path.join(folder, filename))
    atomic.write_json(os.path.join(folder, "summary.json"),
                      {"settings": settings, name: out, "claims": [c._asdict() for c in name_claims]})
    atomic.write_text(os.path.join(folder, "summary.md"), summary_markdown({name: name_claims}, settings))
    bar.update()
  bar.close()
  summary = summary_markdown(claims, settings)
  aggregate = os.path.join(args.out, "summary.md")
  if len(names) > 1:
    atomic.write_text(aggregate, summary)
  elif os.path.exists(aggregate):
    atomic.write_text(aggregate, merged_summary(aggregate, names[0], claims[names[0]], settings))
  if not args.quiet:
    print(summary)
    print(f"wrote {', '.join(os.path.join(args.out, n) for n in names)}")
  return results


if __name__ == "__main__":
  main()
