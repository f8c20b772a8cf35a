from __future__ import annotations

import itertools
import json
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from webdancer.agents.engines.base import ChatGeneration, SamplingParams
from webdancer.data.crawlqa import (
    CrawlResult,
    EngineQuestionWriter,
    GraphQuestionWriter,
    crawl,
    parse_json_reply,
    questions_from_crawl,
    synthesize_crawlqa,
)
from webdancer.envs.oracle import OracleAgent, read_infobox
from webdancer.envs.synthetic_tasks import split_of
from webdancer.envs.tasks import Task
from webdancer.envs.web_env import WebEnv
from webdancer.web.render import render_page
from webdancer.web.snapshots import Miss, Page, SnapshotStore
from webdancer.web.synthetic_graph import KnowledgeGraph
from webdancer.web.synthetic_html import INCOMING_LIMIT
from webdancer.web.synthetic_schema import (
    ATTR_BY_NAME,
    CATEGORY_ATTRS,
    RELATION_BY_NAME,
    format_value,
)
from webdancer.web.urls import normalize_url
from webdancer.web.webdir import WebDir


@dataclass
class Web:
    path: Path
    store: SnapshotStore
    graph: KnowledgeGraph
    root: str


@pytest.fixture(scope="module")
def web(synthetic_web: Path) -> Web:
    """The 400-page synthetic site (built once per session by conftest's ``synthetic_web``)."""
    webdir = WebDir(synthetic_web)
    graph = webdir.graph()
    return Web(synthetic_web, webdir.store(), graph, graph.base_url + "/")


@pytest.fixture(scope="module")
def full_crawl(web: Web) -> CrawlResult:
    return crawl(web.store, web.root, max_depth=3, max_pages=400, progress=False)


@pytest.fixture(scope="module")
def graph_tasks(web: Web, full_crawl: CrawlResult) -> list[Task]:
    return questions_from_crawl(full_crawl, GraphQuestionWriter(web.graph), n=80, seed=0)


def _links(page_store: SnapshotStore, url: str) -> set[str]:
    got = page_store.get(url)
    assert isinstance(got, Page), url
    return {normalize_url(link.url) for link in render_page(got.body, got.url).links}


# ------------------------------------------------------------------ crawl


class DictStore:
    """A tiny site held in memory: url -> (content type, body)."""

    def __init__(self, pages: Mapping[str, tuple[str, str]]) -> None:
        self.pages = pages
        self.asked: list[str] = []

    def get(self, url: str) -> Page | Miss:
        self.asked.append(url)
        if url not in self.pages:
            return Miss(url, "not in snapshot")
        content_type, body = self.pages[url]
        return Page(url, 200, content_type, body.encode())


def _html(*hrefs: str) -> tuple[str, str]:
    links = "".join(f'<a href="{h}">link {i}</a> ' for i, h in enumerate(hrefs))
    return "text/html; charset=utf-8", f"<html><body><p>Some text. {links}</p></body></html>"


TINY = {
    "https://t.example/": _html("/a", "/b", "/c.pdf", "https://other.example/x", "/a#top",
                                "mailto:x@t.example"),
    "https://t.example/a": _html("/d", "/"),
    "https://t.example/c.pdf": ("application/pdf", "%PDF-1.4"),
    "https://t.example/d": _html("/e"),
    "https://t.example/e": _html(),
}


def test_crawl_counts_misses_non_html_and_offsite_links() -> None:
    store = DictStore(TINY)
    result = crawl(store, "https://t.example/", max_depth=5, max_pages=10, progress=False)
    assert result.order == ["https://t.example/", "https://t.example/a", "https://t.example/d",
                            "https://t.example/e"]
    assert result.misses == 1 and result.miss_urls == ["https://t.example/b"]
    assert result.non_html == 1 and result.offsite == 1
    assert list(result.depth.values()) == [0, 1, 2, 3]
    assert result.path_to("https://t.example/e") == result.order
    assert "https://other.example/x" not in store.asked  # same_site keeps off other hosts
    assert len(store.asked) == len(set(store.asked))  # "/a#top" is "/a": fetched once


def test_crawl_respects_depth_page_budget_and_same_site() -> None:
    root = "https://t.example/"
    shallow = crawl(DictStore(TINY), root, max_depth=1, max_pages=10, progress=False)
    assert shallow.order == [root, root + "a"]
    capped = crawl(DictStore(TINY), root, max_depth=5, max_pages=2, progress=False)
    assert capped.order == [root, root + "a"]
    wide = crawl(DictStore(TINY), root, max_depth=1, max_pages=10, same_site=False, progress=False)
    assert wide.offsite == 0 and wide.misses == 2  # the other host is tried, and misses


def test_crawl_of_synthetic_site_is_breadth_first(web: Web) -> None:
    result = crawl(web.store, web.root, max_depth=2, max_pages=60, progress=False)
    assert len(result.pages) == 60 and result.misses == 0
    assert result.order[0] == web.root and result.parents[web.root] is None
    depths = [result.depth[u] for u in result.order]
    assert depths == sorted(depths) and max(depths) <= 2
    position = {u: i for i, u in enumerate(result.order)}
    for url in result.order[1:]:
        parent = result.parents[url]
        assert parent is not None and position[parent] < position[url]
        assert result.depth[url] == result.depth[parent] + 1
        assert url in _links(web.store, parent)
    # Depth 1 is exactly the root's own links, all read before anything deeper.
    level1 = {u for u in result.order if result.depth[u] == 1}
    assert level1 == _links(web.store, web.root) - {web.root}


def test_crawl_reaches_every_page_of_a_small_site(web: Web, full_crawl: CrawlResult) -> None:
    assert len(full_crawl.pages) == 400
    assert {e.url for e in web.graph.entities.values()} <= set(full_crawl.pages)


def test_crawl_counts_misses_in_a_store_with_holes(web: Web) -> None:
    class Holes:
        def get(self, url: str) -> Page | Miss:
            return Miss(url, "not in snapshot") if "/wiki/Person/" in url else web.store.get(url)

    result = crawl(Holes(), web.root, max_depth=3, max_pages=400, progress=False)
    people = {e.url for e in web.graph.of_type("person")}
    assert result.misses == len(people) and set(result.miss_urls) == people
    assert not people & set(result.pages)


# ------------------------------------------------------------------ graph questions


def _kind(tasks: Sequence[Task], kind: str) -> list[Task]:
    out = [t for t in tasks if t.meta["kind"] == kind]
    assert out, f"no {kind} tasks were written"
    return out


def test_every_kind_is_written_with_its_metadata(graph_tasks: list[Task]) -> None:
    assert len(graph_tasks) == 80
    assert len({t.question for t in graph_tasks}) == 80
    for task in graph_tasks:
        meta = task.meta
        assert meta["source"] == "crawlqa" and task.root_url == meta["root_url"]
        assert meta["hops"] == len(meta["golden_path"]) >= 1
        assert set(meta["golden_path"]) <= set(meta["source_urls"]) | set(meta["golden_path"])
        assert meta["oracle"] == (meta["kind"] in ("single_page", "multi_hop"))
        assert meta["crawl_path"][0] == task.root_url
        assert meta["crawl_path"][-1] == meta["golden_path"][0]
    for kind in ("single_page", "multi_hop", "counting", "intersection"):
        assert len(_kind(graph_tasks, kind)) >= 10


def test_single_page_answers_are_on_the_page(web: Web, graph_tasks: list[Task]) -> None:
    for task in _kind(graph_tasks, "single_page"):
        entity = web.graph.by_name(task.meta["entities"][0])
        assert task.meta["golden_path"] == [entity.url] and entity.name in task.question
        spec = ATTR_BY_NAME[(entity.type, task.meta["attribute"])]
        assert task.answer == format_value(spec, entity.attributes[spec.name])
        got = web.store.get(entity.url)
        assert isinstance(got, Page)
        assert read_infobox(render_page(got.body, got.url).text, spec.label) == task.answer


def test_multi_hop_answers_follow_the_graph(web: Web, graph_tasks: list[Task]) -> None:
    for task in _kind(graph_tasks, "multi_hop"):
        names, relations = task.meta["entities"], task.meta["relations"]
        assert len(names) == len(relations) + 1 == task.meta["hops"] >= 2
        node = web.graph.by_name(names[0])
        for rel, name in zip(relations, names[1:]):
            assert not RELATION_BY_NAME[rel].many
            node = web.graph.entity(node.relations[rel][0])
            assert node.name == name
        spec = ATTR_BY_NAME[(node.type, task.meta["attribute"])]
        assert task.answer == format_value(spec, node.attributes[spec.name])
        path = task.meta["golden_path"]
        for a, b in itertools.pairwise(path):
            assert b in _links(web.store, a)


def test_counting_answers_match_the_graph_and_the_page(web: Web, graph_tasks: list[Task]) -> None:
    kinds = set()
    for task in _kind(graph_tasks, "counting"):
        url = task.meta["golden_path"][0]
        expected = int(task.answer.replace(",", ""))
        if task.meta["relations"]:  # a list of incoming links, shown in full
            kinds.add("incoming")
            rel = task.meta["relations"][0]
            obj = web.graph.by_name(task.meta["entities"][0])
            subjects = [e for e in web.graph.entities.values()
                        if obj.id in e.relations.get(rel, [])]
            assert len(subjects) == expected and 2 <= expected < INCOMING_LIMIT
            assert {s.url for s in subjects} <= _links(web.store, url)
        else:  # a category page that states its size
            kinds.add("category")
            label, value = task.meta["entities"][0].split(": ", 1)
            (type_name, attr), = [(t, a) for t, (a, values) in CATEGORY_ATTRS.items()
                                  if ATTR_BY_NAME[(t, a)].label == label and value in values]
            members = [e for e in web.graph.of_type(type_name) if e.attributes[attr] == value]
            assert len(members) == expected
            got = web.store.get(url)
            assert isinstance(got, Page) and f"contains {task.answer} article" in got.text
    assert kinds == {"incoming", "category"}


def test_intersection_answers_are_unique(web: Web, graph_tasks: list[Task]) -> None:
    for task in _kind(graph_tasks, "intersection"):
        (r1, a), (r2, b) = task.meta["conditions"]
        a_id, b_id = web.graph.by_name(a).id, web.graph.by_name(b).id
        both = [e.name for e in web.graph.entities.values()
                if a_id in e.relations.get(r1, []) and b_id in e.relations.get(r2, [])]
        assert both == [task.answer]
        assert a in task.question and b in task.question and task.answer not in task.question
        lead = task.meta["golden_path"][0]  # the page whose list is complete
        assert task.meta["golden_path"][1] in _links(web.store, lead)


def test_only_crawled_pages_are_used(web: Web) -> None:
    small = crawl(web.store, web.root, max_pages=120, progress=False)
    tasks = synthesize_crawlqa(web.store, web.root, GraphQuestionWriter(web.graph), n=40, seed=3,
                               max_pages=120, progress=False)
    assert tasks
    for task in tasks:
        assert set(task.meta["golden_path"]) | set(task.meta["source_urls"]) <= set(small.pages)


def test_synthesis_is_deterministic_per_seed(web: Web) -> None:
    def run(seed: int) -> list[tuple[str, str]]:
        writer = GraphQuestionWriter(web.graph)
        tasks = synthesize_crawlqa(web.store, web.root, writer, n=30, seed=seed, max_pages=150,
                                   progress=False)
        return [(t.question, t.answer) for t in tasks]

    first = run(0)
    assert first == run(0)
    assert first != run(1)


def test_splits_never_share_a_question(web: Web, full_crawl: CrawlResult) -> None:
    writer = GraphQuestionWriter(web.graph)
    train = questions_from_crawl(full_crawl, writer, n=25, split="train", test_fraction=0.3)
    test = questions_from_crawl(full_crawl, writer, n=25, split="test", test_fraction=0.3)
    assert len(train) == len(test) == 25
    assert not {t.question for t in train} & {t.question for t in test}
    assert all(split_of(t.question, 0.3) == "train" and t.meta["split"] == "train" for t in train)
    assert all(split_of(t.question, 0.3) == "test" for t in test)


def test_oracle_solves_single_page_and_multi_hop_tasks(web: Web, full_crawl: CrawlResult) -> None:
    writer = GraphQuestionWriter(web.graph, kinds=("single_page", "multi_hop"), hops=(2, 5))
    tasks = questions_from_crawl(full_crawl, writer, n=30, seed=5)
    assert {t.meta["kind"] for t in tasks} == {"single_page", "multi_hop"}
    env = WebEnv(web.path)
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


# ------------------------------------------------------------------ a chat model writes


class ScriptedChat:
    """A ChatEngine that replays canned replies in order and keeps the prompts."""

    def __init__(self, replies: Sequence[str]) -> None:
        self.replies = list(replies)
        self.prompts: list[str] = []

    def chat(self, conversations: Sequence[Sequence[Mapping[str, str]]],
             params: SamplingParams) -> list[ChatGeneration]:
        out = []
        for conversation in conversations:
            self.prompts.append(conversation[-1]["content"])
            reply = self.replies[(len(self.prompts) - 1) % len(self.replies)]
            out.append(ChatGeneration(reply, "stop"))
        return out


def test_engine_writer_parses_replies_and_skips_bad_ones(full_crawl: CrawlResult) -> None:
    replies = [
        json.dumps({"question": "Which region is Moroth in?", "answer": "Caelostead Steppe",
                    "evidence_urls": ["https://synthwiki.example/nowhere"]}),
        'Here you go:\n```json\n{"question": "When was it founded?", "answer": 1576}\n```',
        '{"question": "Broken", "answer": ',  # malformed
        json.dumps({"question": "Is the answer Yes?", "answer": "yes"}),  # gives itself away
    ]
    engine = ScriptedChat(replies)
    writer = EngineQuestionWriter(engine, max_pages=3)
    tasks = writer.write(full_crawl, random.Random(0), 8)
    assert [t.question for t in tasks] == ["Which region is Moroth in?", "When was it founded?"] * 2
    assert tasks[1].answer == "1576"
    assert writer.stats == {"asked": 8, "malformed": 2, "leaky": 2, "written": 4}
    for task, prompt in zip(tasks, [engine.prompts[i] for i in (0, 1, 4, 5)]):
        path = task.meta["golden_path"]
        assert 1 <= len(path) <= 3 and all(url in prompt for url in path)
        assert full_crawl.pages[path[0]].title in prompt
        for a, b in itertools.pairwise(path):
            assert b in full_crawl.linked(a)
        assert task.meta["source_urls"] == path  # unknown evidence URLs: the pages shown
        assert task.meta["source"] == "crawlqa" and task.meta["oracle"] is False


def test_engine_writer_through_synthesize(web: Web) -> None:
    replies = [json.dumps({"question": f"Question number {i}?", "answer": f"A{i}"})
               for i in range(50)]
    writer = EngineQuestionWriter(ScriptedChat(replies))
    tasks = synthesize_crawlqa(web.store, web.root, writer, n=12, seed=0, max_pages=50,
                               progress=False)
    assert [t.question for t in tasks] == [f"Question number {i}?" for i in range(12)]
    assert all(t.id.startswith("crawlqa-all-") for t in tasks)


def test_parse_json_reply() -> None:
    assert parse_json_reply('noise {"a": 1} more {"b": 2}') == {"a": 1}
    assert parse_json_reply("{not json} then {\"q\": \"x\"}") == {"q": "x"}
    assert parse_json_reply("[1, 2]") is None
    assert parse_json_reply("") is None
