"""webdancer: train autonomous web information-seeking agents end to end.

Synthesize deep QA over a web kept as page snapshots, sample ReAct trajectories,
SFT with tool responses masked, then DAPO (or GRPO, Dr. GRPO, GSPO) against
pluggable format/answer rewards, and evaluate on GAIA and WebWalkerQA.
"""

__version__ = "0.1.0"
