"""Training: the YAML config system (config), preference / prompt / SFT data (data), the jitted train step
(step), the loop with resume (loop), orbax checkpoints (checkpoint), and the trainers for SFT, reward
models and the DPO family (trainers)."""
