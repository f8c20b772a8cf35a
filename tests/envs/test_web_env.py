from __future__ import annotations

import json
import random
import warnings
from pathlib import Path

import gymnasium as gym
import pytest
from gymnasium.utils.env_checker import check_env

import webdancer.envs  # noqa: F401  (registers the ids)
from webdancer.envs import ENV_IDS
from webdancer.envs.oracle import OracleAgent
from webdancer.envs.synthetic_tasks import SyntheticTasks
from webdancer.envs.tasks import Task, load_jsonl_tasks, write_jsonl_tasks
from webdancer.envs.web_env import ANSWER, CALL_BUDGET, CONTEXT_BUDGET, WebEnv
from webdancer.envs.wrappers import LayoutDrift, RecordEpisodes
from webdancer.web.webdir import WebDir


def _call(name: str, **arguments: object) -> str:
    return f"<think>t</think><tool_call>{json.dumps({'name': name, 'arguments': arguments})}</tool_call>"


@pytest.fixture()
def tasks_file(tmp_path: Path, synthetic_web: Path) -> Path:
    tasks = SyntheticTasks(WebDir(synthetic_web).graph(), n=5, hops=(1, 2), split="all")
    path = tmp_path / "tasks.jsonl"
    write_jsonl_tasks(tasks, path)
    return path


def _kwargs(env_id: str, synthetic_web: Path, tasks_file: Path, tmp_path: Path) -> dict[str, object]:
    if env_id == "webdancer/SyntheticWeb-v0":
        return {"web": synthetic_web}
    if env_id == "webdancer/WarcWeb-v0":
        return {"web": synthetic_web, "tasks": tasks_file}
    return {"web": tmp_path / "live", "tasks": tasks_file, "mode": "live"}


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_check_env_on_every_id(env_id: str, synthetic_web: Path, tasks_file: Path, tmp_path: Path) -> None:
    env = gym.make(env_id, disable_env_checker=True, **_kwargs(env_id, synthetic_web, tasks_file, tmp_path))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_env(env.unwrapped, skip_render_check=True)


def test_seeded_reset_is_deterministic(synthetic_web: Path) -> None:
    env = gym.make("webdancer/SyntheticWeb-v0", web=synthetic_web)
    firsts = [env.reset(seed=7)[0] for _ in range(3)]
    assert len(set(firsts)) == 1
    others = {env.reset(seed=s)[0] for s in range(10)}
    assert len(others) > 1
    a = env.step(_call("search", query="Velm"))[0]
    env.reset(seed=7)
    assert env.step(_call("search", query="Velm"))[0] == a


def test_oracle_solves_synthetic_tasks(synthetic_web: Path) -> None:
    env = gym.make("webdancer/SyntheticWeb-v0", web=synthetic_web, hops=(1, 6), n_tasks=60)
    agent, solved = OracleAgent(), 0
    for i in range(60):
        obs, _ = env.reset(options={"index": i})
        agent.reset(env.unwrapped.episode.task)
        done = False
        while not done:
            obs, reward, terminated, truncated, info = env.step(agent.act(obs))
            done = terminated or truncated
        assert info["invalid_actions"] == 0
        solved += reward == pytest.approx(1.0)
    assert solved / 60 >= 0.99


def test_invalid_actions_are_observations_and_counted(synthetic_web: Path) -> None:
    env = WebEnv(synthetic_web, tasks=[Task("q?", "a")])
    env.reset(seed=0)
    cases = [
        ("nonsense", None),
        (_call("browse", url="x"), "browse"),
        (_call("search"), "search"),
        (_call("search", query=[]), "search"),
        (_call("visit", url="https://nowhere.example/x", goal="g"), "visit"),
        (_call("visit", url=["a"], goal=3), "visit"),
        (_call("search", query="q", extra=1), "search"),
    ]
    for n, (action, tool) in enumerate(cases, 1):
        obs, _reward, terminated, truncated, info = env.step(action)
        assert not info["valid_action"], action
        assert info["error"] and obs
        assert info["invalid_actions"] == n
        assert info["tool"] == tool
        assert not terminated and not truncated


def test_visit_and_search_observations(synthetic_web: Path) -> None:
    task = SyntheticTasks(WebDir(synthetic_web).graph(), n=1, hops=2, split="all")[0]
    env = WebEnv(synthetic_web, tasks=[task])
    env.reset(seed=0)
    obs, _, _, _, info = env.step(_call("search", query=[task.meta["entities"][0]]))
    assert info["valid_action"] and "## Web Results" in obs and task.meta["golden_path"][0] in obs
    assert info["env/search_ms"] > 0
    obs, _, _, _, info = env.step(_call("visit", url=task.meta["golden_path"][0], goal="anything"))
    assert info["valid_action"] and "Evidence:" in obs and task.meta["golden_path"][1] in obs
    obs, reward, terminated, _, info = env.step(f"<think>done</think><answer>{task.answer}</answer>")
    assert terminated and reward == pytest.approx(1.0)
    assert info["termination"] == ANSWER and info["answer"] == task.answer
    assert info["reward_breakdown"]["exact_match"] == 1.0


def test_facts_visit_mode_returns_the_goal_facts_and_the_oracle_still_solves(synthetic_web: Path) -> None:
    tasks = SyntheticTasks(WebDir(synthetic_web).graph(), n=40, hops=(1, 3), split="all")
    env = WebEnv(synthetic_web, tasks=tasks, visit_mode="facts", visit_budget_chars=150, max_links=2, top_k=2)
    agent, solved, evidence = OracleAgent(), 0, []
    for i in range(len(tasks)):
        obs, _ = env.reset(options={"index": i})
        agent.reset(tasks[i])
        done = False
        while not done:
            action = agent.act(obs)
            obs, reward, terminated, truncated, _ = env.step(action)
            if "Evidence:" in obs:
                evidence.append(obs.split("Evidence:\n", 1)[1].split("\n\nLinks:", 1)[0])
            done = terminated or truncated
        solved += reward == pytest.approx(1.0)
    assert solved / len(tasks) >= 0.95
    assert all(len(e.replace("\n", "")) <= 150 for e in evidence)
    assert not any(e.startswith("#") for e in evidence)  # facts, not sections
    with pytest.raises(ValueError, match="visit_mode='summary' is not a visit mode"):
        WebEnv(synthetic_web, visit_mode="summary")


def test_turn_budget_truncates_and_warns_once(synthetic_web: Path) -> None:
    env = WebEnv(synthetic_web, tasks=[Task("q?", "a")], max_turns=3)
    env.reset(seed=0)
    obs1 = env.step("bad")[0]
    obs2 = env.step("bad")[0]
    assert "answer now" not in obs1 and "answer now" in obs2
    _, _, terminated, truncated, info = env.step("bad")
    assert truncated and not terminated and info["termination"] == CALL_BUDGET


def test_observation_budget(synthetic_web: Path) -> None:
    env = WebEnv(synthetic_web, tasks=[Task("q?", "a")], max_observation_chars=10)
    env.reset(seed=0)
    obs = env.step(_call("search", query="city"))[0]
    assert "answer now" in obs
    _, _, _, truncated, info = env.step(_call("search", query="city"))
    assert truncated and info["termination"] == CONTEXT_BUDGET


def test_fuzz_no_exception_and_invalid_flagged(synthetic_web: Path) -> None:
    env = WebEnv(synthetic_web, tasks=[Task("q?", "a")], max_turns=10_000_000)
    env.reset(seed=0)
    rng = random.Random(0)
    pieces = ["<think>", "</think>", "<tool_call>", "</tool_call>", "<answer>", "<tool_response>", "{", "}",
              '"name"', '"arguments"', ":", ",", '"search"', '"visit"', "[", "]", "\x00", "ü", "😀", "\\", '"']
    for i in range(10_000):
        kind = i % 5
        if kind == 0:
            action = bytes(rng.getrandbits(8) for _ in range(rng.randrange(64))).decode("latin-1")
        elif kind == 1:
            action = "".join(rng.choice(pieces) for _ in range(rng.randrange(40)))
        elif kind == 2:
            depth = rng.randrange(1, 5000)
            action = "<tool_call>" + '{"a":' * depth + "1" + "}" * rng.randrange(depth + 1) + "</tool_call>"
        elif kind == 3:
            action = "<tool_call>" + "x" * rng.choice([10, 300_000]) + "</tool_call>"
        else:
            action = "<think>" * rng.randrange(5) + "<answer>" * rng.randrange(3) + "</tool_call>"
        obs, _, terminated, _, info = env.step(action)
        assert isinstance(obs, str)
        if terminated:  # a random answer ended it; start again
            env.reset(seed=i)
        elif not info["valid_action"]:
            assert info["error"]


def test_vector_envs(synthetic_web: Path) -> None:
    fns = [lambda: gym.make("webdancer/SyntheticWeb-v0", web=synthetic_web) for _ in range(2)]
    # Text has no fixed size, so AsyncVectorEnv passes it by pipe (shared_memory=False).
    for vec in (gym.vector.SyncVectorEnv(fns), gym.vector.AsyncVectorEnv(fns, shared_memory=False)):
        obs, _ = vec.reset(seed=3)
        assert len(obs) == 2 and all(isinstance(o, str) for o in obs)
        obs, _rewards, terminated, _truncated, _infos = vec.step((_call("search", query="city"), "<answer>x</answer>"))
        assert "## Web Results" in obs[0]
        assert list(terminated) == [False, True]
        vec.close()


def test_layout_drift_keeps_answers_reachable(synthetic_web: Path) -> None:
    env = LayoutDrift(gym.make("webdancer/SyntheticWeb-v0", web=synthetic_web, hops=(1, 4), n_tasks=30),
                      strength=1.0, per_episode=True)
    agent, solved, changed = OracleAgent(), 0, 0
    for i in range(30):
        obs, _ = env.reset(options={"index": i})
        agent.reset(env.unwrapped.episode.task)
        done = False
        while not done:
            obs, reward, terminated, truncated, _ = env.step(agent.act(obs))
            changed += "Advertisement" in obs or "Sponsored" in obs or "offer" in obs
            done = terminated or truncated
        solved += reward == pytest.approx(1.0)
    assert solved == 30
    assert changed > 0  # the drift is visible to the agent


def test_record_episodes(tmp_path: Path, synthetic_web: Path) -> None:
    env = RecordEpisodes(WebEnv(synthetic_web, tasks=[Task("q?", "a")]), tmp_path / "eps.jsonl")
    env.reset(seed=0)
    env.step("<think>x</think><answer>a</answer>")
    row = json.loads((tmp_path / "eps.jsonl").read_text().splitlines()[0])
    assert row["reward"] == pytest.approx(1.0) and row["termination"] == ANSWER


def test_synthetic_splits_are_disjoint_and_hops_controlled(synthetic_web: Path) -> None:
    graph = WebDir(synthetic_web).graph()
    train = SyntheticTasks(graph, n=40, hops=(1, 5), split="train")
    test = SyntheticTasks(graph, n=10, hops=(1, 5), split="test")
    assert not {t.question for t in train} & {t.question for t in test}
    assert {t.meta["hops"] for t in train} == {1, 2, 3, 4, 5}
    for t in train:
        assert len(t.meta["golden_path"]) == t.meta["hops"]
    deep = SyntheticTasks(graph, n=2, hops=15, split="all")
    assert all(t.meta["hops"] == 15 for t in deep)
    with pytest.raises(ValueError, match="within 1..15"):
        SyntheticTasks(graph, hops=16)


def test_jsonl_tasks_bad_line_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    path.write_text('{"question": "q", "answer": "a"}\n{oops\n')
    with pytest.raises(ValueError, match=r"t.jsonl:2: not valid JSON"):
        load_jsonl_tasks(path)
    path.write_text('{"question": "q"}\n')
    with pytest.raises(ValueError, match=r"t.jsonl:1: missing 'answer'"):
        load_jsonl_tasks(path)


def test_envs_sharing_a_search_backend_keep_their_own_snippet_length(synthetic_web: Path) -> None:
    from webdancer.envs.backends import open_web

    store, search = open_web(synthetic_web)
    before = search.snippet_chars
    graph = WebDir(synthetic_web).graph()
    task = next(iter(SyntheticTasks(graph, n=1, hops=(1, 1), split="all", seed=0)))
    query = task.meta["path"][0] if task.meta.get("path") else task.question
    lengths = {}
    envs = {n: WebEnv(store=store, search=search, tasks=[task], snippet_chars=n, top_k=1) for n in (60, 400)}
    for n, env in envs.items():  # both built before either searches
        env.reset(options={"task": task})
        obs, *_ = env.step(_call("search", query=[str(query)]))
        snippet = [line for line in obs.splitlines() if line.startswith("...")]
        assert snippet, obs
        lengths[n] = len(snippet[0])
    assert lengths[60] < lengths[400]
    assert search.snippet_chars == before  # the shared backend is untouched
    store.close()


def test_visit_keeps_the_link_of_the_best_evidence_when_links_are_cut(tmp_path: Path) -> None:
    from webdancer.envs.tools import ToolContext, format_visit
    from webdancer.web.render import render_page

    html = ("<html><head><title>Ostoane</title></head><body>"
            "<p>Ostoane is a city in <a href='/wiki/Mysalune'>Mysalune Reach</a>.</p>"
            "<table><tr><th>Area</th><td>72 km2</td></tr>"
            "<tr><th>Twin city</th><td><a href='/wiki/Ostymoor'>Ostymoor Crossing</a></td></tr></table>"
            "</body></html>")
    page = render_page(html, "https://w.example/wiki/Ostoane")
    ctx = ToolContext(store=None, search=None, visit_mode="facts", visit_budget_chars=200,  # type: ignore[arg-type]
                      max_links=1)
    obs = format_visit(page, "Twin city", ctx)
    evidence, links = obs.split("Evidence:\n", 1)[1].split("\n\nLinks:\n")
    assert evidence.startswith("Twin city: Ostymoor Crossing [2]") and "[1]" in evidence  # both cited, [2] first
    assert links == "[2] Ostymoor Crossing -> https://w.example/wiki/Ostymoor"


def test_oracle_states_its_last_goal_in_the_questions_words(synthetic_web: Path) -> None:
    tasks = SyntheticTasks(WebDir(synthetic_web).graph(), n=20, hops=(1, 3), split="all")
    env = WebEnv(synthetic_web, tasks=tasks, visit_mode="facts", visit_budget_chars=200, max_links=1, top_k=1)
    agent = OracleAgent()
    for i in range(len(tasks)):
        obs, _ = env.reset(options={"index": i})
        agent.reset(tasks[i])
        goals, done = [], False
        while not done:
            action = agent.act(obs)
            if '"visit"' in action:
                goals.append(json.loads(action.split("<tool_call>")[1].split("</tool_call>")[0])["arguments"]["goal"])
            obs, reward, terminated, truncated, _ = env.step(action)
            done = terminated or truncated
        noun, label = goals[-1].removesuffix(")").rsplit(" (", 1)
        assert tasks[i].question.startswith(f"What is the {noun} of ") and noun.islower()
        assert label == tasks[i].meta["attribute_label"] and reward == pytest.approx(1.0)
