"""Wrappers: layout drift (sites that change under the agent) and episode recording.

``LayoutDrift`` serves every page through a perturbation of its HTML: class names
and ids renamed, content wrapped in extra nesting, sections reordered, ads and
boilerplate added, link texts reworded, and part of a page moved to a continuation
page linked from it. What a page says, and every link it has, stays reachable, so
the task's answer does too; only the way there changes. ``strength`` in [0, 1] sets
how likely and how strong each change is.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gymnasium as gym
from lxml import etree, html

from webdancer.envs.web_env import WebEnv
from webdancer.web.snapshots import Miss, Page, SnapshotStore

CONTINUED = "/continued"
_AD_TEXTS = (
    "Sponsored: compare travel insurance offers in seconds.",
    "Advertisement - Subscribe to our newsletter for weekly highlights.",
    "Limited offer: 30% off premium membership this week only.",
    "Cookies help us deliver our services. By using the site you agree.",
)
_LINK_TEMPLATES = ("{t}", "more on {t}", "{t} (article)", "see {t}", "read about {t}")


def _rng(*parts: object) -> random.Random:
    key = "|".join(map(str, parts)).encode("utf-8")
    return random.Random(int.from_bytes(hashlib.sha1(key).digest()[:8], "big"))


def _rename_attrs(root: Any, rng: random.Random, p: float) -> None:
    for el in root.iter():
        if not isinstance(el.tag, str):
            continue
        for attr in ("class", "id"):
            if el.get(attr) and rng.random() < p:
                el.set(attr, f"x{rng.getrandbits(32):08x}")


def _wrap(container: Any, rng: random.Random, p: float) -> None:
    for child in list(container):
        if isinstance(child.tag, str) and rng.random() < p:
            wrapper = etree.Element("div", {"class": f"w{rng.getrandbits(16):04x}"})
            child.addprevious(wrapper)
            wrapper.append(child)


def _sections(content: Any) -> list[list[Any]]:
    """Top-level runs of content each starting at an ``h2``."""
    runs: list[list[Any]] = []
    for child in content:
        if child.tag == "h2" or not runs:
            runs.append([])
        runs[-1].append(child)
    return runs


def _reorder(content: Any, rng: random.Random) -> None:
    runs = _sections(content)
    if len(runs) < 3:
        return
    head, body = runs[0], runs[1:]
    rng.shuffle(body)
    for el in list(content):
        content.remove(el)
    for run in [head, *body]:
        for el in run:
            content.append(el)


def _add_ads(body: Any, content: Any, rng: random.Random, n: int) -> None:
    for _ in range(n):
        ad = etree.Element("div", {"class": "ad-slot", "role": "complementary"})
        ad.text = rng.choice(_AD_TEXTS)
        children = list(content)
        at = rng.randrange(len(children) + 1) if children else 0
        content.insert(at, ad)
    banner = etree.SubElement(body, "div", {"class": "promo"})
    banner.text = rng.choice(_AD_TEXTS)


def _reword_links(root: Any, rng: random.Random, p: float) -> None:
    for a in root.iter("a"):
        text = (a.text_content() or "").strip()
        if text and len(a) == 0 and rng.random() < p:
            a.text = rng.choice(_LINK_TEMPLATES).format(t=text)


def _content_root(body: Any) -> Any:
    for xpath in ("//main", "//*[@id='content']", "//article"):
        found = body.xpath(xpath)
        if found:
            return found[0]
    return body


def perturb_html(source: bytes, url: str, strength: float, seed: int) -> tuple[bytes, bytes | None]:
    """-> (perturbed page, continuation page or None). Deterministic for (url, seed)."""
    if strength <= 0:
        return source, None
    try:
        doc = html.fromstring(source)
    except (etree.ParserError, ValueError):
        return source, None
    rng = _rng(seed, url)
    body = doc.find("body") if doc.find("body") is not None else doc
    content = _content_root(body)
    moved: list[Any] = []
    if rng.random() < strength * 0.5:
        runs = _sections(content)
        if len(runs) >= 3:  # the lead and its infobox stay; a tail of sections moves
            for run in runs[len(runs) - max(1, len(runs) // 3):]:
                moved.extend(run)
    if rng.random() < strength:
        _reorder(content, rng)
    for el in moved:
        el.getparent().remove(el)
    if moved:
        more = etree.SubElement(content, "p")
        link = etree.SubElement(more, "a", {"href": url.rstrip("/") + CONTINUED})
        link.text = "Continued on the next page"
    _add_ads(body, content, rng, n=round(3 * strength))
    _reword_links(doc, rng, strength * 0.5)
    _wrap(content, rng, strength * 0.5)
    _rename_attrs(doc, rng, strength)
    page = html.tostring(doc, encoding="utf-8", doctype="<!DOCTYPE html>")
    extra = None
    if moved:
        title = doc.findtext(".//title") or url
        cont = html.Element("html")
        etree.SubElement(etree.SubElement(cont, "head"), "title").text = f"{title} (continued)"
        cbody = etree.SubElement(etree.SubElement(cont, "body"), "main")
        for el in moved:
            cbody.append(el)
        extra = html.tostring(cont, encoding="utf-8", doctype="<!DOCTYPE html>")
    return page, extra


class DriftingStore:
    """A read view of a store that serves perturbed pages (and their continuations)."""

    def __init__(self, store: SnapshotStore, strength: float, seed: int) -> None:
        self.store, self.strength, self.seed = store, strength, seed

    def get(self, url: str) -> Page | Miss:
        original = url.rstrip("/")
        continued = original.endswith(CONTINUED)
        if continued:
            original = original[: -len(CONTINUED)]
        result = self.store.get(original)
        if isinstance(result, Miss) or "html" not in result.content_type:
            return result if not continued else Miss(url, "not in snapshot")
        page, extra = perturb_html(result.body, result.url, self.strength, self.seed)
        if continued:
            if extra is None:
                return Miss(url, "not in snapshot")
            return Page(url=url, status=200, content_type=result.content_type, body=extra)
        return Page(url=result.url, status=result.status, content_type=result.content_type, body=page,
                    headers=result.headers, date=result.date)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)


class LayoutDrift(gym.Wrapper[str, str, str, str]):
    """Perturb every page the agent sees. ``per_episode=True`` draws a new layout at
    each reset (a site that keeps changing); else the drift is fixed by ``seed``."""

    def __init__(self, env: gym.Env[str, str], strength: float = 0.5, seed: int = 0,
                 per_episode: bool = False) -> None:
        super().__init__(env)
        if not 0.0 <= strength <= 1.0:
            raise ValueError(f"strength={strength} must lie in [0, 1].")
        base = env.unwrapped
        if not isinstance(base, WebEnv):
            raise TypeError("LayoutDrift wraps a WebEnv (or a wrapper around one).")
        self.strength, self.seed, self.per_episode = strength, seed, per_episode
        self._store = base.ctx.store
        self._episodes = 0
        self._install(seed)

    def _install(self, seed: int) -> None:
        base = self.env.unwrapped
        base.ctx.store = DriftingStore(self._store, self.strength, seed)  # type: ignore[attr-defined]
        base.ctx.render_cache.clear()  # type: ignore[attr-defined]

    def reset(self, **kwargs: Any) -> tuple[str, dict[str, Any]]:
        if self.per_episode:
            self._episodes += 1
            self._install(self.seed * 1_000_003 + self._episodes)
        return self.env.reset(**kwargs)


class RecordEpisodes(gym.Wrapper[str, str, str, str]):
    """Append every finished episode (task, turns, observations, reward, info) to a JSONL file."""

    def __init__(self, env: gym.Env[str, str], path: str | Path,
                 on_episode: Callable[[dict[str, Any]], None] | None = None) -> None:
        super().__init__(env)
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.on_episode = on_episode
        self._actions: list[str] = []
        self._observations: list[str] = []

    def reset(self, **kwargs: Any) -> tuple[str, dict[str, Any]]:
        obs, info = self.env.reset(**kwargs)
        self._actions, self._observations = [], [obs]
        return obs, info

    def step(self, action: str) -> tuple[str, float, bool, bool, dict[str, Any]]:
        obs, reward, terminated, truncated, info = self.env.step(action)
        self._actions.append(action)
        self._observations.append(obs)
        if terminated or truncated:
            ep = self.env.unwrapped.episode  # type: ignore[attr-defined]
            row = {"task": ep.task.to_dict(), "actions": self._actions, "observations": self._observations,
                   "reward": reward, "termination": info.get("termination"),
                   "reward_breakdown": info.get("reward_breakdown", {}),
                   "tool_calls": ep.tool_calls, "invalid_actions": ep.invalid_actions}
            with self.path.open("a", encoding="utf-8") as f:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
            if self.on_episode:
                self.on_episode(row)
        return obs, reward, terminated, truncated, info
