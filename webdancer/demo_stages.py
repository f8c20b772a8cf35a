"""The model-training stages of the demo: base model, SFT, RL.

Each takes the demo config and paths and returns the directory of the model it made,
a normal HF directory the next stage loads with ``from_pretrained``.
"""

from __future__ import annotations

import itertools
from pathlib import Path

from webdancer.conf.demo import DemoConfig


def entity_tokens(web: Path) -> list[str]:
    """Every entity's name and URL slug on the synthetic site.

    As whole tokens they let a model of a few hundred thousand parameters copy a name
    from the question or a page in one step: the in-context copying that a pretrained
    LM brings and that this model could not learn in the demo's few CPU minutes.
    """
    from webdancer.web.webdir import WebDir

    entities = WebDir(web).graph().entities.values()
    return sorted({e.name for e in entities} | {e.url.rstrip("/").rsplit("/", 1)[-1] for e in entities})


def make_base_model(cfg: DemoConfig, web: Path, out: Path) -> Path:
    """Tokenizer trained on the site and protocol, a small Qwen3 model, and a short
    pretraining pass over the site's rendered pages: the offline stand-in for a base LM."""
    from webdancer.agents.pretrain import pretrain
    from webdancer.agents.tiny import default_corpus, make_tiny
    from webdancer.demo import site_corpus

    m = cfg.model
    pages = list(site_corpus(web, cfg.env.visit_mode))  # rendered once for the tokenizer and pretraining
    corpus = itertools.chain(pages, default_corpus(300, seed=m.seed))
    init = make_tiny(out / "init", corpus=corpus, vocab_size=m.vocab_size, hidden_size=m.hidden_size,
                     num_layers=m.num_layers, num_heads=max(2, m.hidden_size // 32),
                     num_kv_heads=max(1, m.hidden_size // 64), intermediate_size=3 * m.hidden_size, seed=m.seed,
                     extra_tokens=entity_tokens(web) if m.entity_tokens else (), head_dim=m.head_dim,
                     rope_theta=m.rope_theta, induction_heads=m.induction_heads)
    if m.pretrain_steps <= 0:
        return init
    return pretrain(init, pages, out / "base", steps=m.pretrain_steps, seq_len=m.pretrain_seq_len,
                    batch_size=m.pretrain_batch_size, lr=m.pretrain_lr, seed=m.seed,
                    copy_fraction=m.pretrain_copy_fraction, wandb_mode=cfg.wandb_mode)


def sft_stage(cfg: DemoConfig, base: Path, data: Path, out: Path) -> Path:
    """SFT on the kept trajectories, after an optional warm-up on their first turns.

    The warm-up is a short-context curriculum: the first turns are ~100 tokens, so a
    step sees many more questions, and the model learns to copy the question's entity
    into its search before it learns whole episodes. It is off by default: with
    induction heads (``model.induction_heads``) the model copies without it, and
    starting RL from SFT without the warm-up gave a higher rollout accuracy on the
    training questions (0.25 vs 0.06 at the first DAPO step).
    """
    from webdancer.algos.sft import train_sft
    from webdancer.conf.sft import SFTConfig

    s = cfg.sft
    common = {"schedule": "cosine", "weight_decay": 0.0, "seed": cfg.model.seed, "save_every": 0,
                  "keep_checkpoints": 1, "wandb_mode": cfg.wandb_mode, "truncate": True}
    if s.warmup_first_turns_steps > 0:
        train_sft(SFTConfig(model=str(base), data=[str(data.with_name("first_turns.jsonl"))], out=str(out / "warmup"),
                            lr=s.lr, max_steps=s.warmup_first_turns_steps, batch_size=s.warmup_batch_size,
                            warmup_steps=s.warmup_steps, max_length=512, pack=True, **common))
        base = out / "warmup" / "final"
    train_sft(SFTConfig(model=str(base), data=[str(data)], out=str(out), lr=s.lr, max_steps=s.steps,
                        batch_size=s.batch_size, pack=s.pack, micro_batch_size=s.micro_batch_size,
                        micro_batch_tokens=s.micro_batch_tokens,
                        warmup_steps=s.warmup_steps, max_length=s.max_length, **common))
    return out / "final"


def rl_stage(cfg: DemoConfig, sft: Path, web: Path, qa: Path, out: Path) -> Path:
    from webdancer.algos import ALGORITHMS
    from webdancer.algos.rl import train_rl
    from webdancer.conf.rl import EnvSection, RLConfig, RolloutSection, TaskSection, algo_node

    r, e = cfg.rl, cfg.env
    node = algo_node(r.algo, ALGORITHMS.get(r.algo).config_type)(**r.algo_options)
    rl_cfg = RLConfig(
        algo=node, model=str(sft), out=str(out),
        env=EnvSection(web=str(web), **e.tool_kwargs()),
        tasks=TaskSection(train=str(qa / "train.jsonl"), test=str(qa / "val.jsonl")),  # never the test split
        rollout=RolloutSection(max_turns=e.max_turns, max_new_tokens=e.max_new_tokens,
                               max_context_tokens=e.max_context_tokens, temperature=r.temperature,
                               prompt_style=e.prompt_style, max_in_flight=r.max_in_flight),
        steps=r.steps, prompts_per_step=r.prompts_per_step, group_size=r.group_size, filter_on=r.filter_on,
        oversample=r.oversample, after_invalid=r.after_invalid, surplus=r.surplus, metrics_by="hops",
        balance_by=r.balance_by, grad_noise=r.grad_noise,
        mini_batch_prompts=r.mini_batch_prompts, micro_batch_size=r.micro_batch_size, lr=r.lr,
        eval_every=0, seed=cfg.model.seed if r.seed is None else r.seed, wandb_mode=cfg.wandb_mode,
        save_every=0, keep_checkpoints=1,
    )
    train_rl(rl_cfg)
    return out / "final"
