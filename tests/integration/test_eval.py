"""``webdancer eval``: the CLI end to end on the tiny model, resuming, and record -> replay."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator, Mapping, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest

from webdancer.agents.engines.base import ChatGeneration
from webdancer.agents.rollout import RolloutConfig
from webdancer.cli import main
from webdancer.envs.synthetic_tasks import SyntheticTasks
from webdancer.envs.tasks import Task
from webdancer.eval.journal import read_eval_trajectories
from webdancer.eval.metrics import EpisodeResult
from webdancer.eval.runner import evaluate
from webdancer.web.webdir import WebDir

SUMMARY_KEYS = ("avg_pass@k", "best_pass@1", "pass@k", "cons@k", "pass@1_per_run",
                "invalid_action_rate", "tool_calls_mean", "turns_mean", "tokens_mean",
                "termination", "n_questions", "n_episodes", "pass@k_curve")


@pytest.fixture(scope="module", autouse=True)
def _one_thread() -> Iterator[None]:
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from webdancer.agents.tiny import make_tiny

    return make_tiny(tmp_path_factory.mktemp("eval") / "tiny", hidden_size=32, num_layers=1)


def _rows(path: Path) -> list[dict[str, Any]]:
    lines = path.read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def _eval_cli(tmp: Path, tiny: Path, web: Path, out: Path, run: str) -> None:
    main(["eval", f"hf:{tiny}", f"web={web}", "k=2", "limit=3", "n=3", "max_turns=2",
          "max_new_tokens=16", "max_context_tokens=1024", "prompt_style=compact", "batch_size=4",
          "progress=false", "threads=1", "dtype=float32", "date=2025-01-01", f"out={out}",
          f"hydra.run.dir={tmp / 'hydra' / run}"])


def test_eval_cli_end_to_end_and_resume(tmp_path: Path, tiny: Path, synthetic_web: Path) -> None:
    out = tmp_path / "eval"
    _eval_cli(tmp_path, tiny, synthetic_web, out, "first")
    for name in ("report.json", "report.md", "trajectories.jsonl", "tool_calls_hist.png",
                 "accuracy_by_hops.png", "pass_at_k.png"):
        assert (out / name).is_file(), name
    report = json.loads((out / "report.json").read_text())
    assert (report["k"], report["benchmark"], report["engine"]) == (2, "synthetic", f"hf:{tiny}")
    for key in SUMMARY_KEYS:
        assert key in report["overall"], key
    assert report["overall"]["n_questions"] == 3 and report["overall"]["n_episodes"] == 6
    assert sum(report["overall"]["termination"].values()) == 6
    assert "overall" in report["breakdowns"]["hops"]
    md = (out / "report.md").read_text()
    for heading in ("| Avg. Pass@2 (mean Pass@1, %) |", "## Termination reasons", "## By hops",
                    "## pass@k over all 2 runs (unbiased, %)", "| group | pass@1 | pass@2 |"):
        assert heading in md
    curve = report["overall"]["pass@k_curve"]
    assert list(curve) == ["1", "2"] and curve["2"] == report["overall"]["pass@k"]

    rows = _rows(out / "trajectories.jsonl")
    assert sorted((r["task_id"], r["run"]) for r in rows) == sorted(
        (t, run) for t in {r["task_id"] for r in rows} for run in (0, 1))
    for row in rows:  # token path: the model's ids are kept, and correctness is recorded
        assert sum(row["loss_mask"]) > 0 and len(row["ids"]) == len(row["loss_mask"])
        assert row["correct"] in (True, False)
    pairs = read_eval_trajectories(out / "trajectories.jsonl")
    assert all(traj.task.id == result.task_id for result, traj in pairs)

    # Interrupted: the last two episodes are lost and a third line was cut off mid-write.
    lines = (out / "trajectories.jsonl").read_text().splitlines(keepends=True)
    (out / "trajectories.jsonl").write_text("".join(lines[:4]) + lines[4][:50])
    _eval_cli(tmp_path, tiny, synthetic_web, out, "second")
    resumed = (out / "trajectories.jsonl").read_text().splitlines(keepends=True)
    assert resumed[:4] == lines[:4] and len(resumed) == 6
    report = json.loads((out / "report.json").read_text())
    assert report["run"]["episodes_run"] == 2 and report["run"]["episodes_resumed"] == 4
    assert report["overall"]["n_episodes"] == 6


class AnswerEngine:
    """A chat model that answers every question at once with the gold answer; counts episodes."""

    label = "answer-bot"

    def __init__(self, tasks: Sequence[Task]) -> None:
        self.answers = {t.question: t.answer for t in tasks}
        self.episodes = 0

    def chat(self, conversations: Sequence[Sequence[Mapping[str, str]]],
             params: Any) -> list[ChatGeneration]:
        self.episodes += len(conversations)
        out = []
        for conversation in conversations:
            question = next(q for q in self.answers if q in conversation[1]["content"])
            text = f"<think>I know it.</think>\n<answer>{self.answers[question]}</answer>"
            out.append(ChatGeneration(text, "stop"))
        return out


class Interrupt(Exception):
    pass


def test_resume_after_interruption_runs_only_the_missing_episodes(tmp_path: Path,
                                                                   synthetic_web: Path) -> None:
    tasks = list(SyntheticTasks(WebDir(synthetic_web).graph(), n=3, hops=(1, 2), split="test"))
    out = tmp_path / "eval"
    engine = AnswerEngine(tasks)
    seen: list[EpisodeResult] = []

    def stop_after_three(result: EpisodeResult) -> None:
        seen.append(result)
        if len(seen) == 3:
            raise Interrupt

    kw: dict[str, Any] = {"out_dir": out, "k": 2, "batch_size": 2, "progress": False,
                          "plots": False}
    with pytest.raises(Interrupt):
        evaluate(tasks, engine, synthetic_web, on_episode=stop_after_three, **kw)
    assert engine.episodes == 4  # two batches ran; the last episode of the second was never written
    written = (out / "trajectories.jsonl").read_text().splitlines()
    assert len(written) == 3

    engine.episodes = 0
    report = evaluate(tasks, engine, synthetic_web, **kw)
    assert engine.episodes == 3  # 6 episodes in all, 3 already done: none of those ran again
    lines = (out / "trajectories.jsonl").read_text().splitlines()
    assert lines[:3] == written and len(lines) == 6
    assert report["overall"]["avg_pass@k"] == 1.0 and report["overall"]["n_episodes"] == 6
    assert report["run"] == {**report["run"], "episodes_run": 3, "episodes_resumed": 3}

    engine.episodes = 0
    evaluate(tasks, engine, synthetic_web, **kw)
    assert engine.episodes == 0  # finished: nothing to recompute
    with pytest.raises(ValueError, match="other settings"):
        evaluate(tasks, engine, synthetic_web, rollout_cfg=RolloutConfig(temperature=1.0), **kw)


# ------------------------------------------------------------------------------ record -> replay

PAGES = {
    "/": "<html><head><title>Museum</title></head><body><h1>City Museum</h1>"
         "<p>Welcome to the City Museum. See our <a href='/people.html'>people</a>.</p>"
         "</body></html>",
    "/people.html": "<html><head><title>People</title></head><body><h1>People</h1>"
                    "<p>The museum was founded by Ada Lovelace in 1843.</p>"
                    "<p>The current curator is Grace Hopper.</p></body></html>",
}


class _Handler(BaseHTTPRequestHandler):
    hits: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        type(self).hits.append(self.path)
        body = PAGES.get(self.path)
        self.send_response(200 if body else 404)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        data = (body or "not found").encode()
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture()
def site() -> Iterator[tuple[str, ThreadingHTTPServer]]:
    _Handler.hits = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


class BrowsingEngine:
    """Visits the root URL, then the first link it shows, then answers from what it read."""

    label = "browser"

    def __init__(self, root: str) -> None:
        self.root = root

    def chat(self, conversations: Sequence[Sequence[Mapping[str, str]]],
             params: Any) -> list[ChatGeneration]:
        return [ChatGeneration(self._turn(conversation), "stop") for conversation in conversations]

    def _turn(self, conversation: Sequence[Mapping[str, str]]) -> str:
        turn = (len(conversation) - 2) // 2
        if turn < 2:
            last = conversation[-1]["content"]
            url = self.root + "/" if turn == 0 else re.findall(r"-> (\S+)", last)[0]
            call = {"name": "visit", "arguments": {"url": url, "goal": "who founded the museum"}}
            return f"<think>Read on.</think>\n<tool_call>{json.dumps(call)}</tool_call>"
        found = re.search(r"founded by ([A-Z]\w+ [A-Z]\w+)", conversation[-1]["content"])
        return f"<think>Done.</think>\n<answer>{found.group(1) if found else 'unknown'}</answer>"


def _observations(out: Path) -> dict[tuple[str, int], list[str | None]]:
    return {(result.task_id, result.run): [t.observation for t in traj.turns]
            for result, traj in read_eval_trajectories(out / "trajectories.jsonl")}


def test_record_then_replay_gives_the_same_observations(
        tmp_path: Path, site: tuple[str, ThreadingHTTPServer]) -> None:
    root, server = site
    task = Task("Who founded the City Museum?", "Ada Lovelace", id="museum", root_url=root + "/",
                meta={"golden_path": [root + "/", root + "/people.html"]})
    web = tmp_path / "web"
    cfg = RolloutConfig(max_turns=4, tools=("visit",), date="2025-01-01", progress=False)
    kw: dict[str, Any] = {"k": 2, "rollout_cfg": cfg, "search": "none", "progress": False,
                          "plots": False}
    recorded = evaluate([task], BrowsingEngine(root), web, out_dir=tmp_path / "record",
                        mode="record", allow_hosts=["127.0.0.1"], **kw)
    assert recorded["overall"]["avg_pass@k"] == 1.0
    assert {"/", "/people.html"} <= set(_Handler.hits)
    assert _Handler.hits.count("/people.html") == 1  # the second run read the recording
    server.shutdown()  # replay must not need the site

    replayed = evaluate([task], BrowsingEngine(root), web, out_dir=tmp_path / "replay",
                        mode="replay", **kw)
    assert replayed["overall"]["avg_pass@k"] == 1.0
    before, after = _observations(tmp_path / "record"), _observations(tmp_path / "replay")
    assert before == after and len(before) == 2
    assert all("Ada Lovelace" in obs[1] for obs in after.values())
