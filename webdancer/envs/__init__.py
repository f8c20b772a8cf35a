"""Gymnasium environments for web information seeking.

Registered ids (string entry points, so importing this package is cheap):

- ``webdancer/SyntheticWeb-v0``: the offline synthetic encyclopedia with multi-hop tasks
- ``webdancer/WarcWeb-v0``: any web directory or WARC snapshot store, replayed offline
- ``webdancer/LiveWeb-v0``: the live web, recording what it sees (or not)
"""

from gymnasium.envs.registration import register, registry

ENV_IDS = ("webdancer/SyntheticWeb-v0", "webdancer/WarcWeb-v0", "webdancer/LiveWeb-v0")
_ENTRY_POINTS = {
    "webdancer/SyntheticWeb-v0": "webdancer.envs.registration:make_synthetic_env",
    "webdancer/WarcWeb-v0": "webdancer.envs.registration:make_warc_env",
    "webdancer/LiveWeb-v0": "webdancer.envs.registration:make_live_env",
}

for _id, _entry in _ENTRY_POINTS.items():
    if _id not in registry:
        # The env checks its own budgets and reports truncation; no TimeLimit wrapper on top.
        register(id=_id, entry_point=_entry, disable_env_checker=False)

__all__ = ["ENV_IDS"]
