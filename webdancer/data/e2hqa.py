"""E2HQA: turn easy questions into hard ones, one named entity at a time.

WebDancer's easy-to-hard synthesis: start from a question with a known answer
about an entity ("What is the population of Moroth?"), then replace the entity's
name with a description of it that another entity's page supports ("... of the
city where Berric Skarremere was born?"), and repeat with the entity just named.
Each step adds one page to read, and the answer never changes.

Offline, ``GraphEscalator`` draws the descriptions from the synthetic site's
knowledge graph and checks each one against the site itself: the page of the
newly named entity must link to the described one and state the fact. For real
sites, ``EngineEscalator`` lets a chat model choose the entity and write the
description from what the environment's tools find, and keeps a description only
when a search for it finds the entity.
"""

from __future__ import annotations

import dataclasses
import logging
import random
import re
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from webdancer.agents.engines.base import ChatEngine, SamplingParams
from webdancer.data.crawlqa import PageSource, parse_json_reply
from webdancer.envs.oracle import read_infobox
from webdancer.envs.synthetic_tasks import MAX_HOPS, make_task, split_of
from webdancer.envs.tasks import Task
from webdancer.envs.tools import TOOLS, ToolContext
from webdancer.web.render import render_page
from webdancer.web.snapshots import Miss
from webdancer.web.synthetic_graph import Entity, KnowledgeGraph
from webdancer.web.synthetic_names import pick, shuffle
from webdancer.web.synthetic_schema import ATTR_BY_NAME, ATTRIBUTES, RELATION_BY_NAME, describe
from webdancer.web.urls import normalize_url

log = logging.getLogger("webdancer.data")

INVERSE = "~"  # marks a step read against a relation: "~born_in" names the one person born in X


@dataclass(frozen=True)
class _PageFacts:
    text: str
    links: frozenset[str]


class PageChecker:
    """Reads pages the way the environment's ``visit`` tool does (store, then render)
    and answers whether one page links to another and states the fact between them."""

    def __init__(self, web: Any, cache_size: int = 4096) -> None:
        self.store = _page_source(web)
        self.cache_size = cache_size
        self._cache: OrderedDict[str, _PageFacts | None] = OrderedDict()
        self.pages_read = 0

    def facts(self, url: str) -> _PageFacts | None:
        if url in self._cache:
            self._cache.move_to_end(url)
            return self._cache[url]
        got = self.store.get(url)
        facts = None
        if not isinstance(got, Miss):
            page = render_page(got.body, got.url, content_type=got.content_type)
            facts = _PageFacts(page.text, frozenset(normalize_url(link.url) for link in page.links))
            self.pages_read += 1
        self._cache[url] = facts
        if len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return facts

    def states(self, source: Entity, relation: str, target: Entity) -> bool:
        """Whether ``source``'s page leads to ``target`` through ``relation``: the
        infobox row names it (forward), or the related-entries list under the
        relation's heading does (``~relation``), and the page links to it."""
        page = self.facts(source.url)
        if page is None or normalize_url(target.url) not in page.links:
            return False
        if relation.startswith(INVERSE):
            heading = RELATION_BY_NAME[relation[1:]].incoming
            section = rf"^#+ {re.escape(heading)}\n(.*?)(?=^#|\Z)"
            match = re.search(section, page.text, re.MULTILINE | re.DOTALL)
            return bool(match) and target.name in match.group(1)
        value = read_infobox(page.text, RELATION_BY_NAME[relation].label)
        return value is not None and target.name in value


def _page_source(web: Any) -> PageSource:
    """The store behind a WebEnv (wrapped or not), a ToolContext, a store, or a web directory."""
    env = getattr(web, "unwrapped", web)
    ctx = getattr(env, "ctx", env)
    if isinstance(ctx, ToolContext):
        return ctx.store
    if hasattr(web, "get"):
        return web
    if isinstance(web, (str, Path)):
        from webdancer.web.webdir import WebDir

        return WebDir(web).store()
    raise TypeError(f"cannot read pages from {type(web).__name__}; pass a WebEnv, a ToolContext, "
                    "a SnapshotStore or a web directory path.")


def _the_only(phrase: str) -> str:
    """'a person born in X' -> 'the only person born in X' (used when exactly one exists)."""
    for article in ("a ", "an "):
        if phrase.startswith(article):
            return "the only " + phrase[len(article):]
    return phrase


def _phrase(chain: Sequence[Entity], relations: Sequence[str]) -> str:
    """The noun phrase naming ``chain[-1]`` through ``relations`` from ``chain[0]``'s name."""
    phrase = chain[0].name
    for rel in relations:
        if rel.startswith(INVERSE):
            phrase = _the_only(RELATION_BY_NAME[rel[1:]].backward.format(o=phrase))
        else:
            phrase = describe(rel, subject=phrase)
    return phrase


def relation_label(relation: str) -> str:
    """The words a page uses for a step: its infobox label, or its related-entries heading."""
    if relation.startswith(INVERSE):
        return RELATION_BY_NAME[relation[1:]].incoming
    return RELATION_BY_NAME[relation].label


class GraphEscalator:
    """Escalates questions over the synthetic site's knowledge graph (see module docstring).

    ``web`` is what pages are read through: a ``WebEnv``, a ``ToolContext``, a
    ``SnapshotStore`` or a web directory. ``budget`` bounds the candidate steps
    tried per ``escalate`` call (a depth-first search that backs out of dead ends).
    """

    def __init__(self, graph: KnowledgeGraph, web: Any, *, budget: int = 400) -> None:
        self.graph = graph
        self.checker = PageChecker(web)
        self.budget = budget
        self._verified: dict[tuple[str, str, str], bool] = {}
        self.stats = {"checked": 0, "rejected": 0}

    def _verify(self, source: Entity, relation: str, target: Entity) -> bool:
        key = (source.id, relation, target.id)
        if key not in self._verified:
            self.stats["checked"] += 1
            self._verified[key] = self.checker.states(source, relation, target)
            self.stats["rejected"] += not self._verified[key]
        return self._verified[key]

    def candidates(self, head: Entity, chain: Sequence[Entity]) -> list[tuple[str, Entity]]:
        """Ways to name ``head`` through another entity E: (relation, E) such that
        E --relation--> head is single-valued, or head is the only subject of
        head --r--> E (relation ``~r``). E is new to the chain and its name does not
        contain the name of any entity in it (so no replaced name can reappear)."""
        used = {e.id for e in chain}
        names = [e.name.casefold() for e in chain]
        out: list[tuple[str, Entity]] = []
        for rel, src in self.graph.incoming(head.id):
            if not RELATION_BY_NAME[rel].many:
                out.append((rel, self.graph.entity(src)))
        for rel, dst in self.graph.neighbors(head.id):
            spec = RELATION_BY_NAME[rel]
            if spec.many:
                continue
            subjects = [s for r, s in self.graph.incoming(dst) if r == rel]
            if subjects == [head.id]:
                out.append((INVERSE + rel, self.graph.entity(dst)))
        return [(r, e) for r, e in out
                if e.id not in used and not any(n in e.name.casefold() for n in names)]

    def escalate(self, task: Task, target_hops: int, rng: random.Random) -> Task | None:
        """``task`` rewritten to need ``target_hops`` pages, or None when no verified
        chain that long was found. ``task.meta`` must name its chain as ``make_task``
        does (``entities``, ``relations``, ``attribute``)."""
        chain, relations = self._chain_of(task)
        if not len(chain) <= target_hops <= MAX_HOPS:
            raise ValueError(f"target_hops={target_hops} must lie within {len(chain)}..{MAX_HOPS} "
                             f"for a task that already needs {len(chain)} pages.")
        found = self._search(chain, relations, target_hops, rng)
        if found is None:
            return None
        new_chain, new_relations = found
        return self._task(task, new_chain, new_relations, len(chain))

    def _chain_of(self, task: Task) -> tuple[list[Entity], list[str]]:
        meta = task.meta
        if "entities" not in meta or "attribute" not in meta:
            raise ValueError(f"task {task.id or task.question!r} has no entities/attribute in "
                             "meta; start from a task made by make_task or easy_task.")
        chain = [self.graph.by_name(name) for name in meta["entities"]]
        return chain, list(meta.get("relations", []))

    def _search(self, chain: list[Entity], relations: list[str], target: int,
                rng: random.Random) -> tuple[list[Entity], list[str]] | None:
        """Depth-first: prepend verified steps until the chain is ``target`` long."""
        budget = self.budget
        stack = [self._shuffled(chain[0], chain, rng)]
        added = 0
        while stack and budget > 0:
            if len(chain) == target:
                return chain, relations
            frame = stack[-1]
            if not frame:
                stack.pop()
                if added:  # back out of a dead end
                    chain, relations, added = chain[1:], relations[1:], added - 1
                continue
            rel, entity = frame.pop()
            budget -= 1
            # Either way the reader goes from the new entity's page to the head's.
            if not self._verify(entity, rel, chain[0]):
                continue
            chain, relations, added = [entity, *chain], [rel, *relations], added + 1
            stack.append(self._shuffled(entity, chain, rng))
        return (chain, relations) if len(chain) == target else None

    def _shuffled(self, head: Entity, chain: list[Entity],
                  rng: random.Random) -> list[tuple[str, Entity]]:
        options = self.candidates(head, chain)
        shuffle(rng, options)
        return options

    def _task(self, easy: Task, chain: list[Entity], relations: list[str], easy_hops: int) -> Task:
        attribute = easy.meta["attribute"]
        spec = ATTR_BY_NAME[(chain[-1].type, attribute)]
        question = f"What is the {spec.noun} of {_phrase(chain, relations)}?"
        escalation = []  # the question after each step, easiest first
        for start in range(len(chain) - easy_hops - 1, -1, -1):
            phrase = _phrase(chain[start:], relations[start:])
            escalation.append(f"What is the {spec.noun} of {phrase}?")
        meta = {
            "hops": len(chain),
            "golden_path": [e.url for e in chain],
            "entities": [e.name for e in chain],
            "relations": list(relations),
            "relation_labels": [relation_label(r) for r in relations],
            "attribute": attribute,
            "attribute_label": spec.label,
            "entity_type": chain[-1].type,  # the oracle reads the answer's fact by (type, attribute)
            "source": "e2hqa",
            "easy_question": easy.question,
            "escalation": escalation,
            "oracle": True,
        }
        return Task(question, easy.answer, root_url=chain[0].url, meta=meta)

    def easy_task(self, entity: Entity, attribute: str) -> Task:
        """The one-page question to start from: an attribute of ``entity``."""
        return make_task(self.graph, entity, [], attribute)


def _hop_choices(hops: int | Sequence[int]) -> list[int]:
    """An int is one count, a tuple ``(low, high)`` an inclusive range, a list the counts to use."""
    if isinstance(hops, int):
        choices = [hops]
    elif isinstance(hops, tuple) and len(hops) == 2:
        choices = list(range(int(hops[0]), int(hops[1]) + 1))
    else:
        choices = [int(h) for h in hops]
    if not choices or not all(2 <= h <= MAX_HOPS for h in choices):
        raise ValueError(f"hops={hops!r} must give hop counts within 2..{MAX_HOPS}, "
                         "e.g. (3, 15) or [3, 8, 15].")
    return choices


def synthesize_e2hqa(
    graph: KnowledgeGraph,
    web: Any,
    *,
    n: int,
    hops: int | Sequence[int] = (3, 15),
    seed: int = 0,
    split: str | None = None,
    test_fraction: float = 0.2,
    progress: bool = True,
    max_attempts: int | None = None,
) -> list[Task]:
    """``n`` distinct E2HQA tasks whose hop counts cycle through ``hops`` (see
    ``_hop_choices``); each starts as an attribute question about a random entity
    and is escalated with a ``GraphEscalator`` reading pages through ``web``.
    Deterministic for a seed; ``split`` keeps only questions of that split.
    """
    if split not in (None, "train", "test"):
        raise ValueError(f"split={split!r} is not valid; use 'train', 'test' or None.")
    choices = _hop_choices(hops)
    escalator = GraphEscalator(graph, web)
    rng = random.Random(f"e2hqa-{seed}-{split}")
    entities = list(graph.entities.values())
    tasks: list[Task] = []
    seen: set[str] = set()
    attempts, limit = 0, max_attempts or 20 * n + 200
    bar = _bar(n, progress)
    while len(tasks) < n and attempts < limit:
        attempts += 1
        target = choices[len(tasks) % len(choices)]
        entity = pick(rng, entities)
        attribute = pick(rng, ATTRIBUTES[entity.type]).name
        task = escalator.escalate(escalator.easy_task(entity, attribute), target, rng)
        if task is None or task.question in seen:
            continue
        seen.add(task.question)
        if split is not None and split_of(task.question, test_fraction) != split:
            continue
        meta = {**task.meta, "split": split or "all", "seed": seed}
        task_id = f"e2hqa-{split or 'all'}-{len(tasks)}"
        tasks.append(Task(task.question, task.answer, task_id, task.root_url, meta))
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    if len(tasks) < n:
        log.warning("e2hqa: wrote %d of %d tasks in %d attempts; use a larger site or fewer hops.",
                    len(tasks), n, attempts)
    return tasks


def _bar(total: int, enabled: bool) -> Any:
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc="e2hqa", unit="task")


# ---------------------------------------------------------------- a chat model escalates

ESCALATOR_SYSTEM = (
    "You help write hard research questions. You make a question harder by replacing one name "
    "in it with a description that identifies the same thing without naming it, so that a reader "
    "has to search the web to work out what is meant. The answer to the question must not change."
)


def _pick_prompt(question: str, answer: str) -> str:
    return (f"Question: {question}\nAnswer: {answer}\n\n"
            "Choose one person, place, organization or other named thing that appears word for "
            "word in the question (never the answer itself) and that could be replaced by a "
            "description.\nReply with only a JSON object: "
            '{"entity": "the name exactly as written in the question"}')


def _describe_prompt(entity: str, answer: str, evidence: str) -> str:
    return (f"What a web page says about {entity}:\n\n{evidence}\n\n"
            f"Write a short description that identifies {entity} uniquely, using facts from the "
            f"page above, without using the name {entity!r} or the text {answer!r}.\n"
            'Reply with only a JSON object: {"description": "the description, as a noun phrase"}')


class EngineEscalator:
    """Escalation for real sites, driven by a chat model and checked with the env's tools.

    Each step: the model picks a name in the question; the env's ``search`` finds the
    page about it and ``visit`` reads it; the model writes a description from that
    page; the description is kept only when searching for it returns the entity's
    page (or its name in a result title) within the top ``top_k`` results. Replies
    that are not the JSON asked for are counted in ``stats["malformed"]``.
    """

    def __init__(self, engine: ChatEngine, env: Any, params: SamplingParams | None = None, *,
                 tries_per_step: int = 3, top_k: int = 10, evidence_chars: int = 3000) -> None:
        self.engine = engine
        env = getattr(env, "unwrapped", env)
        self.ctx: ToolContext = getattr(env, "ctx", env)
        if not isinstance(self.ctx, ToolContext) or self.ctx.search is None:
            raise ValueError("EngineEscalator needs a WebEnv (or ToolContext) with a search "
                             "backend; open the env on a web directory that has a search index.")
        self.params = params or SamplingParams(max_new_tokens=256, temperature=0.7, stop=())
        self.tries_per_step = tries_per_step
        self.top_k = top_k
        self.evidence_chars = evidence_chars
        self.stats = {"steps": 0, "malformed": 0, "not_found": 0, "unverified": 0}

    def _ask(self, prompt: str, rng: random.Random) -> dict[str, Any] | None:
        params = dataclasses.replace(self.params, seed=rng.randrange(2**31))
        conversation = [{"role": "system", "content": ESCALATOR_SYSTEM},
                        {"role": "user", "content": prompt}]
        reply = parse_json_reply(self.engine.chat([conversation], params)[0].text)
        if reply is None:
            self.stats["malformed"] += 1
        return reply

    def _find(self, name: str) -> str | None:
        """URL of the page about ``name``: the first search hit whose title names it."""
        hits = self.ctx.search.search([name], k=self.top_k)[0]  # type: ignore[union-attr]
        return next((h.url for h in hits if name.casefold() in h.title.casefold()), None)

    def _identifies(self, description: str, name: str, url: str) -> bool:
        hits = self.ctx.search.search([description], k=self.top_k)[0]  # type: ignore[union-attr]
        page = normalize_url(url)
        name = name.casefold()
        return any(normalize_url(h.url) == page or name in h.title.casefold() for h in hits)

    def step(self, question: str, answer: str,
             rng: random.Random) -> tuple[str, str, str, str] | None:
        """One replacement: -> (new question, entity, description, entity URL), or None."""
        picked = self._ask(_pick_prompt(question, answer), rng)
        entity = str(picked.get("entity", "")).strip() if picked else ""
        if not entity or entity not in question or entity.casefold() == answer.casefold():
            if picked is not None:
                self.stats["malformed"] += 1
            return None
        url = self._find(entity)
        if url is None:
            self.stats["not_found"] += 1
            return None
        goal = f"facts that identify {entity}"
        visit = TOOLS.get("visit")({"url": [url], "goal": goal}, self.ctx)
        reply = self._ask(_describe_prompt(entity, answer, visit.text[: self.evidence_chars]), rng)
        description = str(reply.get("description", "")).strip() if reply else ""
        low = description.casefold()
        if not description or entity.casefold() in low or answer.casefold() in low:
            if reply is not None:
                self.stats["malformed"] += 1
            return None
        if not self._identifies(description, entity, url):
            self.stats["unverified"] += 1
            return None
        self.stats["steps"] += 1
        return question.replace(entity, description), entity, description, url

    def escalate(self, task: Task, target_hops: int, rng: random.Random) -> Task | None:
        """``task`` with names replaced until it needs ``target_hops`` pages, or None."""
        hops = int(task.meta.get("hops", 1))
        question, escalation = task.question, []
        entities, descriptions, urls = [], [], []
        while hops < target_hops:
            for _ in range(self.tries_per_step):
                result = self.step(question, task.answer, rng)
                if result is not None:
                    break
            else:
                return None
            question, entity, description, url = result
            hops += 1
            escalation.append(question)
            entities.insert(0, entity)
            descriptions.insert(0, description)
            urls.insert(0, url)
        # Pages of the obscured entities, newest first (the reader resolves that one first).
        meta = {
            "source": "e2hqa", "hops": hops, "easy_question": task.question,
            "escalation": escalation,
            "golden_path": list(dict.fromkeys(urls + list(task.meta.get("golden_path", [])))),
            "entities": list(dict.fromkeys(entities + list(task.meta.get("entities", [])))),
            "descriptions": descriptions, "oracle": False, "writer": "engine",
        }
        return Task(question, task.answer, root_url=task.root_url, meta=meta)
