"""Agents: prompts, generation engines, rollouts and the offline tiny model.

This is the only layer that tokenizes. ``engines`` turn token-id prompts into
sampled token ids with their logprobs; ``rollout`` drives many environments with
one engine; ``tiny`` builds a small tokenizer and model for tests and the demo.
"""
