"""The ``webdancer`` command: one entry point, each subcommand a Hydra app.

    webdancer web build pages=5000 seed=1
    webdancer web show https://synthwiki.example/ web=runs/web/site
    webdancer web search "river delta" --multirun k=5,10

Every subcommand accepts Hydra overrides and ``--multirun``. Positional words after
the subcommand are turned into the override its config names (a URL, a query), so
the common cases read like ordinary shell commands.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Command:
    """A subcommand: its structured config, the function it runs, and how it
    takes positional words."""

    config: str  # "module:Dataclass"
    task: str  # "module:function" taking the config dataclass instance
    help: str
    positional: str | None = None  # config field positional words go to
    positional_list: bool = False  # several positional words -> a list
    writes_outputs: bool = True  # False: no run directory, logs to stdout only
    setup: str | None = None  # "module:function" registering config groups first


COMMANDS: dict[tuple[str, ...], Command] = {
    ("web", "build"): Command(
        "webdancer.conf.web:WebBuildConfig",
        "webdancer.web.commands:build",
        "generate the synthetic site into a snapshot store and build its search index",
    ),
    ("web", "record"): Command(
        "webdancer.conf.web:WebRecordConfig",
        "webdancer.web.commands:record",
        "fetch live pages into a snapshot store (WARC) and index them",
        positional="urls",
        positional_list=True,
    ),
    ("web", "show"): Command(
        "webdancer.conf.web:WebShowConfig",
        "webdancer.web.commands:show",
        "print a page as the agent sees it",
        positional="url",
        writes_outputs=False,
    ),
    ("web", "search"): Command(
        "webdancer.conf.web:WebSearchConfig",
        "webdancer.web.commands:search",
        "run a search as the agent sees it",
        positional="query",
        writes_outputs=False,
    ),
    ("model", "make-tiny"): Command(
        "webdancer.conf.model:MakeTinyConfig",
        "webdancer.agents.tiny:make_tiny_command",
        "train an offline tokenizer and save a small random Qwen3 model (tests, demo)",
        positional="out",
    ),
    ("sft",): Command(
        "webdancer.conf.sft:SFTConfig",
        "webdancer.algos.sft:sft_command",
        "supervised fine-tuning on trajectories, loss on assistant tokens only (tool responses masked)",
        positional="data",
        positional_list=True,
    ),
    ("rl",): Command(
        "webdancer.conf.rl:RLConfig",
        "webdancer.algos.rl:rl_command",
        "RL (DAPO, GRPO, Dr. GRPO, GSPO, ...) of a policy browsing the web; algo= picks the method",
        setup="webdancer.conf.rl:register_rl_configs",
    ),
    ("synth", "qa"): Command(
        "webdancer.conf.synth:SynthQAConfig",
        "webdancer.data.commands:qa",
        "synthesize CRAWLQA / E2HQA tasks from a synthetic web (train and test JSONL)",
    ),
    ("synth", "trajectories"): Command(
        "webdancer.conf.synth:SynthTrajectoriesConfig",
        "webdancer.data.commands:trajectories",
        "sample trajectories on tasks with the oracle, hf:PATH or openai:URL:MODEL engines",
    ),
    ("synth", "filter"): Command(
        "webdancer.conf.synth:SynthFilterConfig",
        "webdancer.data.commands:filter_trajectories",
        "three-stage trajectory filter (validity, correctness, quality) with a report",
        positional="trajectories",
    ),
    ("synth", "convert"): Command(
        "webdancer.conf.synth:SynthConvertConfig",
        "webdancer.data.commands:convert_command",
        "convert trajectories between our JSONL, WebDancer's format and chat messages",
        positional="input",
    ),
    ("eval",): Command(
        "webdancer.conf.eval:EvalConfig",
        "webdancer.eval.commands:eval_command",
        "k runs per question on a benchmark: Pass@1/Pass@k/Cons@k, breakdowns, report.md/json, plots; resumable",
        positional="engine",
    ),
    ("web", "demo"): Command(
        "webdancer.conf.web:WebDemoConfig",
        "webdancer.web.commands:demo",
        "build a small offline web, search it and read a page",
    ),
    ("demo",): Command(
        "webdancer.conf.demo:DemoConfig",
        "webdancer.demo:demo_command",
        "the whole recipe offline: site, QA synthesis, oracle trajectories, SFT, DAPO, evaluation and report",
    ),
}


def _load(spec: str) -> Any:
    module, _, name = spec.partition(":")
    return getattr(importlib.import_module(module), name)


def _quote(value: str) -> str:
    """Quote a free string as a Hydra override value."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


# Hydra flags whose next word is their value, not a positional word.
_VALUE_FLAGS = {"--cfg", "-c", "--info", "-i", "--package", "-p", "--config-path", "-cp",
                "--config-name", "-cn", "--config-dir", "-cd", "--experimental-rerun"}


def _scan_args(cmd: Command, args: Sequence[str]) -> tuple[list[str], list[str]]:
    """-> (Hydra flags with their values, overrides): ``key=value`` words as they are,
    positional words as one override of the command's positional key."""
    flags: list[str] = []
    overrides: list[str] = []
    positional: list[str] = []
    takes_value = False
    for arg in args:
        if takes_value or arg.startswith("-"):
            flags.append(arg)
            takes_value = not takes_value and arg in _VALUE_FLAGS
            continue
        looks_like_override = "=" in arg.split("://", 1)[0] and not arg.startswith(("http://", "https://"))
        if looks_like_override:
            overrides.append(arg)
        else:
            positional.append(arg)
    if positional:
        if cmd.positional is None:
            raise SystemExit(f"unexpected argument {positional[0]!r}; this command takes only key=value overrides.")
        if cmd.positional_list:
            overrides.append(f"{cmd.positional}=[{','.join(_quote(p) for p in positional)}]")
        elif len(positional) > 1:
            # Several words without quotes are one query or URL the user forgot to quote.
            overrides.append(f"{cmd.positional}={_quote(' '.join(positional))}")
        else:
            overrides.append(f"{cmd.positional}={_quote(positional[0])}")
    return flags, overrides


def _split_args(cmd: Command, args: Sequence[str]) -> list[str]:
    """The command line as Hydra takes it: flags first (its parser reads them only before
    the overrides, so ``--multirun`` may come anywhere on ours), then the overrides."""
    flags, overrides = _scan_args(cmd, args)
    return flags + overrides


def _hydra_overrides(path: tuple[str, ...], cmd: Command, args: Sequence[str]) -> list[str]:
    """Hydra's command line for ``args``: flags, then our defaults, then the user's overrides."""
    flags, overrides = _scan_args(cmd, args)
    name = "_".join(path)
    user_keys = {o.split("=", 1)[0].lstrip("+~") for o in overrides}
    base: list[str] = [f"hydra.job.name={name}"]
    if cmd.writes_outputs:
        if "hydra.run.dir" not in user_keys:
            base.append("hydra.run.dir=runs/" + "/".join(path) + "/${now:%Y-%m-%d_%H-%M-%S}")
        if "hydra.sweep.dir" not in user_keys:
            base.append("hydra.sweep.dir=runs/" + "/".join(path) + "/multirun/${now:%Y-%m-%d_%H-%M-%S}")
    else:
        base += [
            "hydra.run.dir=.",
            "hydra.output_subdir=null",
            "hydra/job_logging=stdout",
            "hydra/hydra_logging=disabled",
        ]
    return flags + base + overrides


def run_app(path: tuple[str, ...], args: Sequence[str]) -> None:
    """Run one subcommand as a Hydra app with ``args`` as its command line."""
    import hydra
    from hydra.core.config_store import ConfigStore
    from omegaconf import OmegaConf

    cmd = COMMANDS[path]
    if cmd.setup:
        _load(cmd.setup)()
    config_cls = _load(cmd.config)
    task: Callable[[Any], Any] = _load(cmd.task)
    config_name = "webdancer_" + "_".join(path)
    ConfigStore.instance().store(name=config_name, node=config_cls)

    def hydra_task(cfg: Any) -> Any:
        # Structured config -> the real dataclass; validation lives in __post_init__.
        return task(OmegaConf.to_object(cfg))

    # YAML groups in webdancer/conf compose with the structured configs registered above.
    app = hydra.main(version_base="1.3", config_path="conf", config_name=config_name)(hydra_task)
    saved = sys.argv
    sys.argv = ["webdancer " + " ".join(path), *_hydra_overrides(path, cmd, args)]
    try:
        app()
    finally:
        sys.argv = saved


def usage() -> str:
    lines = ["usage: webdancer COMMAND [key=value ...] [--multirun] [--cfg job] [--help]", "", "commands:"]
    for path, cmd in COMMANDS.items():
        lines.append(f"  {' '.join(path):<14} {cmd.help}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    for length in (2, 1):
        path = tuple(args[:length])
        if path in COMMANDS:
            run_app(path, args[length:])
            return
    if not args or args[0] in {"-h", "--help", "help"}:
        print(usage())
        return
    groups = sorted({p[0] for p in COMMANDS})
    hint = ", ".join(" ".join(p) for p in COMMANDS if p[0] == args[0]) or ", ".join(groups)
    raise SystemExit(f"unknown command {' '.join(args[:2])!r}; try one of: {hint}.")


if __name__ == "__main__":
    main()
