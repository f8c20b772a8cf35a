"""Algorithms: pure tensor math for RL losses and advantages, one file per method.

Each file (``dapo``, ``grpo``, ``dr_grpo``, ``gspo``, ``reinforce_pp``) holds a config
dataclass, pure functions on tensors, and one ``ALGORITHMS.register`` call; the RL
loop looks a method up by name::

    from webdancer.algos import ALGORITHMS
    algo = ALGORITHMS.get("dapo")
    cfg = algo.make_config({"clip_high": 0.28})
    loss, metrics = algo.policy_loss(logp, old_logp, adv, mask, cfg,
                                     scale_tokens=tokens, scale_seqs=seqs)

Adding a method is one new file that registers itself, plus an import here.
``losses`` holds what they share: aggregation modes and the global-mean contract
under gradient accumulation and data parallel (``step_loss_scales``).
"""

from webdancer.algos import dapo, dr_grpo, grpo, gspo, reinforce_pp
from webdancer.algos.base import ALGORITHMS, AlgoConfig, Algorithm
from webdancer.algos.dapo import DAPOConfig
from webdancer.algos.dr_grpo import DrGRPOConfig
from webdancer.algos.grpo import GRPOConfig
from webdancer.algos.gspo import GSPOConfig
from webdancer.algos.losses import AGG_MODES, aggregate, step_loss_scales
from webdancer.algos.reinforce_pp import ReinforcePPConfig

__all__ = [
    "AGG_MODES",
    "ALGORITHMS",
    "AlgoConfig",
    "Algorithm",
    "DAPOConfig",
    "DrGRPOConfig",
    "GRPOConfig",
    "GSPOConfig",
    "ReinforcePPConfig",
    "aggregate",
    "dapo",
    "dr_grpo",
    "grpo",
    "gspo",
    "reinforce_pp",
    "step_loss_scales",
]
