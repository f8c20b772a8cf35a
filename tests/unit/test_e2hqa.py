from __future__ import annotations

import itertools
import json
import random
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest

from webdancer.agents.engines.base import ChatGeneration, SamplingParams
from webdancer.data.e2hqa import INVERSE, EngineEscalator, GraphEscalator, synthesize_e2hqa
from webdancer.envs.oracle import OracleAgent
from webdancer.envs.synthetic_tasks import SyntheticTasks, split_of
from webdancer.envs.tasks import Task
from webdancer.envs.web_env import WebEnv
from webdancer.web.render import render_page
from webdancer.web.snapshots import Miss, Page, SnapshotStore
from webdancer.web.synthetic_graph import Entity, KnowledgeGraph
from webdancer.web.synthetic_schema import ATTR_BY_NAME, RELATION_BY_NAME, describe, format_value
from webdancer.web.urls import normalize_url
from webdancer.web.webdir import WebDir


@pytest.fixture(scope="module")
def graph(synthetic_web: Path) -> KnowledgeGraph:
    """The graph of the 400-page synthetic site (built once per session by conftest)."""
    return WebDir(synthetic_web).graph()


@pytest.fixture(scope="module")
def store(synthetic_web: Path) -> SnapshotStore:
    return WebDir(synthetic_web).store()


@pytest.fixture(scope="module")
def env(synthetic_web: Path) -> WebEnv:
    return WebEnv(synthetic_web)


@pytest.fixture(scope="module")
def by_hops(graph: KnowledgeGraph, env: WebEnv) -> dict[int, list[Task]]:
    return {h: synthesize_e2hqa(graph, env, n=8, hops=[h], seed=h, progress=False)
            for h in (3, 8, 15)}


def _links(store: SnapshotStore, url: str) -> set[str]:
    got = store.get(url)
    assert isinstance(got, Page), url
    return {normalize_url(link.url) for link in render_page(got.body, got.url).links}


def _check_step(graph: KnowledgeGraph, near: Entity, relation: str, far: Entity) -> None:
    """``near`` names ``far`` through ``relation`` in the graph, with a single answer."""
    if relation.startswith(INVERSE):
        rel = relation[1:]
        assert far.relations.get(rel) == [near.id]
        subjects = [s for r, s in graph.incoming(near.id) if r == rel]
        assert subjects == [far.id]  # "the only ... of near"
    else:
        assert not RELATION_BY_NAME[relation].many
        assert near.relations.get(relation) == [far.id]


def test_requested_hop_counts_are_reached(by_hops: dict[int, list[Task]]) -> None:
    for hops, tasks in by_hops.items():
        assert len(tasks) == 8
        for task in tasks:
            meta = task.meta
            assert meta["hops"] == hops == len(meta["golden_path"]) == len(meta["entities"])
            assert len(meta["relations"]) == len(meta["relation_labels"]) == hops - 1
            assert len(meta["escalation"]) == hops - 1 and meta["escalation"][-1] == task.question
            assert meta["source"] == "e2hqa" and meta["oracle"] is True


def test_escalated_questions_name_only_the_new_start(graph: KnowledgeGraph,
                                                      by_hops: dict[int, list[Task]]) -> None:
    for task in (t for tasks in by_hops.values() for t in tasks):
        names = task.meta["entities"]
        assert task.meta["entity_type"] == graph.by_name(names[-1]).type
        assert names[0] in task.question
        for name in names[1:]:
            assert name not in task.question
        spec = ATTR_BY_NAME[(graph.by_name(names[-1]).type, task.meta["attribute"])]
        assert task.meta["easy_question"] == f"What is the {spec.noun} of {names[-1]}?"
        # Each step names exactly the entity one further back along the chain.
        for k, question in enumerate(task.meta["escalation"], 1):
            named = [n for n in names if n in question]
            assert named == [names[len(names) - 1 - k]]


def test_answers_are_unchanged_and_follow_the_chain(graph: KnowledgeGraph, store: SnapshotStore,
                                                    by_hops: dict[int, list[Task]]) -> None:
    for task in (t for tasks in by_hops.values() for t in tasks):
        chain = [graph.by_name(n) for n in task.meta["entities"]]
        for near, relation, far in zip(chain, task.meta["relations"], chain[1:]):
            _check_step(graph, near, relation, far)
        target = chain[-1]
        spec = ATTR_BY_NAME[(target.type, task.meta["attribute"])]
        assert task.answer == format_value(spec, target.attributes[spec.name])
        assert task.meta["golden_path"] == [e.url for e in chain]
        assert task.root_url == chain[0].url


def test_golden_path_pages_link_in_order(store: SnapshotStore,
                                         by_hops: dict[int, list[Task]]) -> None:
    for task in by_hops[8]:
        path = task.meta["golden_path"]
        for a, b in itertools.pairwise(path):
            assert b in _links(store, a)


def test_synthesis_mixes_hops_and_is_deterministic(graph: KnowledgeGraph,
                                                   store: SnapshotStore) -> None:
    first = synthesize_e2hqa(graph, store, n=13, hops=(3, 15), seed=0, progress=False)
    assert sorted(t.meta["hops"] for t in first) == list(range(3, 16))
    again = synthesize_e2hqa(graph, store, n=13, hops=(3, 15), seed=0, progress=False)
    assert [(t.question, t.answer) for t in first] == [(t.question, t.answer) for t in again]
    other = synthesize_e2hqa(graph, store, n=13, hops=(3, 15), seed=1, progress=False)
    assert [t.question for t in first] != [t.question for t in other]


def test_splits_never_share_a_question(graph: KnowledgeGraph, store: SnapshotStore) -> None:
    kw = {"n": 20, "hops": (3, 6), "seed": 0, "test_fraction": 0.3, "progress": False}
    train = synthesize_e2hqa(graph, store, split="train", **kw)
    test = synthesize_e2hqa(graph, store, split="test", **kw)
    assert len(train) == len(test) == 20
    assert not {t.question for t in train} & {t.question for t in test}
    assert all(split_of(t.question, 0.3) == "train" for t in train)
    assert all(split_of(t.question, 0.3) == "test" and t.meta["split"] == "test" for t in test)


def test_steps_the_site_does_not_state_are_rejected(graph: KnowledgeGraph,
                                                    store: SnapshotStore) -> None:
    class NoPages:
        def get(self, url: str) -> Page | Miss:
            return Miss(url, "not in snapshot")

    class NoPeople:
        def get(self, url: str) -> Page | Miss:
            return Miss(url, "not in snapshot") if "/wiki/Person/" in url else store.get(url)

    city = graph.of_type("city")[0]
    blind = GraphEscalator(graph, NoPages())
    assert blind.escalate(blind.easy_task(city, "population"), 3, random.Random(0)) is None
    assert blind.stats["checked"] == blind.stats["rejected"] > 0
    partial = GraphEscalator(graph, NoPeople())
    for seed in range(5):
        task = partial.escalate(partial.easy_task(city, "population"), 4, random.Random(seed))
        assert task is not None
        # A person's page could not be read, so no person was named through one.
        people = [n for n in task.meta["entities"][:-1] if graph.by_name(n).type == "person"]
        assert not people


def test_escalation_extends_a_multi_hop_task(graph: KnowledgeGraph, env: WebEnv) -> None:
    escalator = GraphEscalator(graph, env)
    start = SyntheticTasks(graph, n=10, hops=2, split="all", seed=0)
    done = 0
    for task in start:
        # Some starts are dead ends (nothing else names their first entity uniquely).
        harder = escalator.escalate(task, 5, random.Random(0))
        if harder is None:
            continue
        done += 1
        assert harder.answer == task.answer
        assert harder.meta["entities"][-2:] == task.meta["entities"]
        assert harder.meta["relations"][-1:] == task.meta["relations"]
        assert len(harder.meta["escalation"]) == 3
    assert done >= 5
    with pytest.raises(ValueError, match="target_hops"):
        escalator.escalate(start[0], 1, random.Random(0))
    with pytest.raises(ValueError, match="entities"):
        escalator.escalate(Task("What?", "x"), 3, random.Random(0))


def test_oracle_solves_e2hqa_tasks(graph: KnowledgeGraph, env: WebEnv) -> None:
    tasks = synthesize_e2hqa(graph, env, n=26, hops=(3, 15), seed=7, progress=False)
    solved = 0
    for task in tasks:
        obs, _ = env.reset(options={"task": task})
        agent = OracleAgent()
        agent.reset(task)
        done = False
        while not done:
            obs, reward, terminated, truncated, _info = env.step(agent.act(obs))
            done = terminated or truncated
        solved += reward == pytest.approx(1.0)
    assert solved / len(tasks) >= 0.95


# ------------------------------------------------------------------ a chat model escalates


class GraphChat:
    """A ChatEngine that plays the model from the graph: it picks the longest entity
    name in the question and describes an entity through one that points to it.
    Its first reply is not JSON, and its first description is too vague to verify."""

    def __init__(self, graph: KnowledgeGraph) -> None:
        self.graph = graph
        self.names = sorted((e.name for e in graph.entities.values()), key=len, reverse=True)
        self.calls = 0
        self.described = 0

    def chat(self, conversations: Sequence[Sequence[Mapping[str, str]]],
             params: SamplingParams) -> list[ChatGeneration]:
        return [ChatGeneration(self._reply(c[-1]["content"]), "stop") for c in conversations]

    def _reply(self, prompt: str) -> str:
        self.calls += 1
        if self.calls == 1:
            return "Let me think about which entity to pick."
        if '{"entity"' in prompt:
            question = prompt.split("Question: ", 1)[1].split("\n", 1)[0]
            return json.dumps({"entity": next(n for n in self.names if n in question)})
        self.described += 1
        if self.described == 1:
            return json.dumps({"description": "a thing mentioned somewhere"})
        entity = self.graph.by_name(re.search(r"says about (.+?):\n", prompt).group(1))
        for rel, source in self.graph.incoming(entity.id):
            if not RELATION_BY_NAME[rel].many:
                phrase = describe(rel, subject=self.graph.entity(source).name)
                return f"```json\n{json.dumps({'description': phrase})}\n```"
        return json.dumps({"description": "something else entirely"})


def test_engine_escalator_replaces_names_with_verified_descriptions(graph: KnowledgeGraph,
                                                                     env: WebEnv) -> None:
    engine = GraphChat(graph)
    escalator = EngineEscalator(engine, env, tries_per_step=3)
    made = []
    for city in graph.of_type("city")[:6]:
        easy = GraphEscalator(graph, env).easy_task(city, "population")
        task = escalator.escalate(easy, 3, random.Random(0))
        if task is None:
            continue
        made.append(task)
        assert task.answer == easy.answer and task.meta["hops"] == 3
        assert city.name not in task.question and task.meta["entities"][-1] == city.name
        assert task.meta["escalation"][-1] == task.question and task.meta["oracle"] is False
        # The obscured entities' pages, newest first, then the original page.
        assert task.meta["golden_path"][-1] == city.url
        for name, url in zip(task.meta["entities"], task.meta["golden_path"]):
            assert graph.by_name(name).url == url
    assert len(made) >= 2
    assert escalator.stats["malformed"] == 1 and escalator.stats["unverified"] >= 1
    assert escalator.stats["steps"] >= 2 * len(made)


def test_engine_escalator_needs_search(store: SnapshotStore) -> None:
    with pytest.raises(ValueError, match="search backend"):
        EngineEscalator(GraphChat.__new__(GraphChat), WebEnv(store=store))
