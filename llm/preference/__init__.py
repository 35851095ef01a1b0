"""Preference learning around the trainers: oracles that label pairs (oracle), evaluation of policies by
reward, KL and win rate (evaluate), and the paper's pipelines: RSO, multi-step RSO, hybrid / online
GSHF-DPO, best-of-n (pipelines)."""
