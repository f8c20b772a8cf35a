"""Structured configs of the ``webdancer synth`` commands: QA synthesis, trajectory
sampling, the three-stage filter and format conversion.

Output paths left empty go into the run directory Hydra creates; relative paths
given by the user resolve against the current directory, as in every command.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from omegaconf import MISSING

from webdancer.conf.web import check_choice

QA_KINDS = ("crawlqa", "e2hqa", "both")
QA_SPLITS = ("train", "test", "both")
CRAWLQA_KINDS = ("single_page", "multi_hop", "counting", "intersection")
TRAJECTORY_FORMATS = ("trajectory", "webdancer", "messages")
PROMPT_STYLES = ("webdancer", "compact")
MAX_HOPS = 15


@dataclass(frozen=True)
class EngineSpec:
    """A parsed engine spec: ``oracle``, ``hf:PATH`` or ``openai:BASE_URL:MODEL``."""

    kind: str  # "oracle" | "hf" | "openai"
    path: str = ""  # hf: model directory or Hub name
    base_url: str = ""  # openai: API root including /v1
    model: str = ""  # openai: served model name

    @property
    def label(self) -> str:
        """Short name recorded in ``Trajectory.engine``."""
        if self.kind == "hf":
            return "hf:" + self.path.rstrip("/").rsplit("/", 1)[-1]
        if self.kind == "openai":
            return "openai:" + self.model
        return self.kind


ENGINE_SPEC_HELP = ("use 'oracle', 'hf:PATH' or 'openai:BASE_URL#MODEL' (e.g. openai:http://127.0.0.1:8000/v1#qwen; "
                    "openai:BASE_URL:MODEL works too)")


def parse_engine_spec(spec: str) -> EngineSpec:
    """Parse one engine spec; a bad one raises ValueError naming the valid forms.

    In ``openai:BASE_URL:MODEL`` the model starts after the first ``:`` that follows the
    URL's path (or its ``host:port`` when it has no path), so ``host:port`` and model
    names with ``:`` both work.
    """
    kind, _, rest = spec.partition(":")
    if kind == "oracle" and not rest:
        return EngineSpec("oracle")
    if kind == "hf" and rest:
        return EngineSpec("hf", path=rest)
    if kind == "openai" and "#" in rest:  # openai:BASE_URL#MODEL, the form every command takes
        base_url, _, model = rest.rpartition("#")
        if model and "://" in base_url and urlsplit(base_url).hostname:
            return EngineSpec("openai", base_url=base_url, model=model)
    if kind == "openai" and "://" in rest:
        scheme, _, after = rest.partition("://")
        slash = after.find("/")
        if slash >= 0:
            cut = after.find(":", slash)
        else:  # host:model or host:port:model
            parts = after.split(":")
            if len(parts) == 2 and not parts[1].isdigit():
                cut = len(parts[0])
            elif len(parts) >= 3:
                cut = len(parts[0]) + 1 + len(parts[1])
            else:
                cut = -1
        if cut > 0 and after[cut + 1:]:
            base_url, model = f"{scheme}://{after[:cut]}", after[cut + 1:]
            if urlsplit(base_url).hostname:
                return EngineSpec("openai", base_url=base_url, model=model)
    raise ValueError(f"engine spec {spec!r} is not valid; {ENGINE_SPEC_HELP}.")


def engine_labels(specs: Sequence[EngineSpec]) -> list[str]:
    """``spec.label`` for each spec, with ``#2``, ``#3``... added where labels repeat."""
    seen: dict[str, int] = {}
    out = []
    for spec in specs:
        seen[spec.label] = seen.get(spec.label, 0) + 1
        out.append(spec.label if seen[spec.label] == 1 else f"{spec.label}#{seen[spec.label]}")
    return out


def _check_positive(name: str, value: float | None, minimum: int = 1) -> None:
    if value is not None and value < minimum:
        raise ValueError(f"{name}={value} must be at least {minimum}.")


@dataclass
class SynthQAConfig:
    """``webdancer synth qa``: CRAWLQA and/or E2HQA tasks from a synthetic web directory.

    Writes ``tasks.train.jsonl`` and ``tasks.test.jsonl`` (with ``split=both``); ``out``
    names the file stem's path (``out=data/tasks.jsonl`` -> ``data/tasks.train.jsonl``).
    """

    web: str = "runs/web/site"  # web directory built by `webdancer web build`
    kind: str = "both"  # crawlqa | e2hqa | both
    n: int = 100  # train tasks per kind
    n_test: int = 20  # test tasks per kind
    hops: list[int] = field(default_factory=lambda: [2, 4])  # [low, high] pages per multi-hop task
    split: str = "both"  # train | test | both
    seed: int = 0
    test_fraction: float = 0.2  # share of questions (by hash) that belong to the test split
    crawlqa_kinds: list[str] = field(default_factory=lambda: list(CRAWLQA_KINDS))
    root_url: str = ""  # where the crawl starts; empty: the site's front page
    crawl_depth: int = 3
    crawl_pages: int = 400
    out: str = ""  # empty: tasks.jsonl in the run directory
    progress: bool = True

    def __post_init__(self) -> None:
        check_choice("kind", self.kind, QA_KINDS)
        check_choice("split", self.split, QA_SPLITS)
        _check_positive("n", self.n)
        _check_positive("n_test", self.n_test)
        _check_positive("crawl_pages", self.crawl_pages)
        _check_positive("crawl_depth", self.crawl_depth, 0)
        if len(self.hops) != 2 or not 2 <= self.hops[0] <= self.hops[1] <= MAX_HOPS:
            raise ValueError(f"hops={list(self.hops)} must be [low, high] with 2 <= low <= high <= {MAX_HOPS}.")
        if not 0.0 < self.test_fraction < 1.0:
            raise ValueError(f"test_fraction={self.test_fraction} must lie strictly between 0 and 1.")
        unknown = sorted(set(self.crawlqa_kinds) - set(CRAWLQA_KINDS))
        if unknown or not self.crawlqa_kinds:
            raise ValueError(f"crawlqa_kinds={list(self.crawlqa_kinds)} must be a non-empty subset of "
                             f"{', '.join(CRAWLQA_KINDS)}.")


@dataclass
class SynthTrajectoriesConfig:
    """``webdancer synth trajectories``: sample trajectories on tasks with one or more engines.

    ``engines`` entries: ``oracle`` (the scripted agent, synthetic webs, one sample per
    task), ``hf:PATH`` (a transformers model, token ids kept), ``openai:BASE_URL:MODEL``
    (an OpenAI-compatible server, text-level chat). Each model engine gives ``k``
    samples per task.
    """

    tasks: str = MISSING  # tasks JSONL (e.g. from `webdancer synth qa`)
    web: str = "runs/web/site"
    engines: list[str] = field(default_factory=lambda: ["oracle"])
    k: int = 1
    limit: int | None = None  # use only the first `limit` tasks
    max_turns: int = 40
    max_new_tokens: int = 1024  # per assistant turn
    max_context_tokens: int = 31 * 1024 - 500
    temperature: float = 0.6
    top_p: float = 0.95
    seed: int = 0
    prompt_style: str = "webdancer"  # webdancer | compact
    date: str | None = None  # the date in the system prompt; None: today
    tool_role: bool = False  # tool output as a `tool` message instead of a user <tool_response> turn
    batch_size: int = 32  # episodes in flight per engine
    dtype: str = "auto"  # hf engines
    device: str | None = None  # hf engines; None: cuda when available
    out: str = ""  # empty: trajectories.jsonl in the run directory
    progress: bool = True

    def __post_init__(self) -> None:
        if not self.engines:
            raise ValueError(f"engines is empty; {ENGINE_SPEC_HELP}.")
        for spec in self.engines:
            parse_engine_spec(spec)
        if len(set(self.engines)) != len(self.engines):
            raise ValueError(f"engines={list(self.engines)} names an engine twice; list each once.")
        _check_positive("k", self.k)
        _check_positive("limit", self.limit)
        _check_positive("max_turns", self.max_turns)
        _check_positive("max_new_tokens", self.max_new_tokens)
        _check_positive("batch_size", self.batch_size)
        check_choice("prompt_style", self.prompt_style, PROMPT_STYLES)
        if self.temperature < 0 or not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"temperature={self.temperature} must be >= 0 and top_p={self.top_p} in (0, 1].")


@dataclass
class SynthFilterConfig:
    """``webdancer synth filter TRAJECTORIES``: the three-stage filter
    (``webdancer.data.filtering``); writes the kept trajectories and report.md/report.json
    next to them."""

    trajectories: str = MISSING  # trajectory file (any format; see in_format)
    in_format: str = "auto"  # auto | trajectory | webdancer | messages
    tasks: str | None = None  # tasks JSONL with the gold answers; None: each trajectory's own task
    out: str = ""  # empty: kept.jsonl in the run directory
    out_format: str = "trajectory"  # trajectory | webdancer | messages
    # validity
    max_turns: int | None = None
    max_tokens: int | None = None
    max_chars: int | None = None
    require_think: bool = True
    require_no_invalid: bool = True
    # correctness
    reward: str = "exact_match"  # exact_match | f1 | contains | gaia_exact_match | judge
    min_reward: float = 1.0
    judge: str | None = None  # openai:BASE_URL:MODEL, for reward=judge
    # quality
    min_tool_calls: int = 1  # WebSailor's real-web SFT data: more than 5 (min_tool_calls=6)
    max_tool_calls: int | None = None
    no_repeated_calls: bool = True
    no_answer_before_evidence: bool = True
    quality_judge: str | None = None  # openai:BASE_URL:MODEL; None: rules only

    def __post_init__(self) -> None:
        check_choice("in_format", self.in_format, ("auto", *TRAJECTORY_FORMATS))
        check_choice("out_format", self.out_format, TRAJECTORY_FORMATS)
        if self.reward == "judge" and not self.judge:
            raise ValueError("reward=judge needs judge=openai:BASE_URL:MODEL; give the judge model.")
        for name in ("judge", "quality_judge"):
            spec = getattr(self, name)
            if spec is not None and parse_engine_spec(spec).kind != "openai":
                raise ValueError(f"{name}={spec!r} must be an openai:BASE_URL:MODEL chat model.")


@dataclass
class SynthConvertConfig:
    """``webdancer synth convert IN out=OUT``: trajectory files between formats."""

    input: str = MISSING
    out: str = MISSING
    in_format: str = "auto"  # auto | trajectory | webdancer | messages
    out_format: str = "messages"  # trajectory | webdancer | messages
    tools: bool = False  # messages: add the tool schemas as a "tools" field

    def __post_init__(self) -> None:
        check_choice("in_format", self.in_format, ("auto", *TRAJECTORY_FORMATS))
        check_choice("out_format", self.out_format, TRAJECTORY_FORMATS)
