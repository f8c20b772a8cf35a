"""Benchmark loaders: GAIA, WebWalkerQA, HotpotQA-style QA and WebDancer's QA, as ``Task`` lists.

Files are JSON lists or JSONL; the format is detected from the first row's keys, then
the file name, or forced with ``name=``. Every task's ``meta`` names its ``benchmark``;
benchmark fields land in lowercase meta keys:

- **gaia** (``metadata.jsonl``: ``task_id, Question, Level, Final answer, file_name,
  Annotator Metadata``; or WebThinker's ``dev.json`` list: ``id, task_id, Question,
  answer, Level, Annotator_Metadata``): id = ``task_id``; meta ``level`` (int),
  ``file_name``, ``annotator_metadata``. Rows with an attached file are skipped unless
  ``include_files=True`` (then meta ``file_path`` points next to the metadata file).
- **webwalkerqa** (nested ``info{...}`` / ``Info{Hop, Domain, Language, Difficulty_Level,
  Source_Website, Golden_Path}`` or flattened top-level keys): ``root_url`` set; meta
  ``type`` (``single_source`` | ``multi_source``), ``difficulty_level`` (``easy`` |
  ``medium`` | ``hard``), ``domain``, ``lang``, ``source_website``, ``golden_path``.
- **hotpotqa** (``{question, answer}``, optional ``idx`` / ``_id`` / ``id``, ``type``, ``level``).
- **webdancer** (``{question, answer, tag}``): meta ``tag`` (``e2hqa`` | ``crawlqa``).
- **jsonl**: generic ``{question, answer, id?, root_url?, meta?}`` rows (``Task.from_dict``).

A bad line fails with ``file:line``, what is wrong and the fix.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from webdancer.envs.tasks import Task, TaskList

log = logging.getLogger(__name__)

FORMATS = ("gaia", "webwalkerqa", "hotpotqa", "webdancer", "jsonl")
_ALIASES = {"webwalker": "webwalkerqa", "hotpot": "hotpotqa", "json": "jsonl"}


class BenchmarkTasks(TaskList):
    """A ``TaskList`` that remembers its source: ``name`` (format), ``path``, and how many
    rows were ``skipped`` and why (``skip_reason``)."""

    def __init__(self, tasks: Iterable[Task], *, name: str, path: Path, skipped: int = 0,
                 skip_reason: str = "") -> None:
        super().__init__(tasks, prefix=name)
        self.name = name
        self.path = path
        self.skipped = skipped
        self.skip_reason = skip_reason


def load_benchmark(name_or_path: str | Path, *, name: str | None = None,
                   include_files: bool = False) -> BenchmarkTasks:
    """Load a benchmark file (or a GAIA folder holding ``metadata.jsonl``) as tasks.

    ``name`` forces a format (one of ``FORMATS``); ``include_files`` keeps GAIA rows
    that come with an attachment.
    """
    path = _resolve(Path(name_or_path))
    rows = _read_rows(path)
    if not rows:
        raise ValueError(f"{path} holds no rows; add question/answer rows.")
    fmt = _format_name(name) if name else detect_format(path, rows[0][1])
    convert = _CONVERTERS[fmt]
    tasks: list[Task] = []
    seen: dict[str, int] = {}
    skipped = 0
    for index, (line, row) in enumerate(rows):
        where = f"{path}:{line}"
        if not isinstance(row, Mapping):
            raise ValueError(f"{where}: expected a JSON object, got {type(row).__name__}; "
                             "fix or remove the row.")
        task = convert(row, where, path, include_files)
        if task is None:
            skipped += 1
            continue
        if not task.id:
            task = Task(task.question, task.answer, f"{path.stem}-{index}", task.root_url,
                        task.meta)
        if task.id in seen:
            raise ValueError(f"{where}: task id {task.id!r} repeats line {seen[task.id]}; "
                             "give each row a unique id.")
        seen[task.id] = line
        tasks.append(task)
    reason = "attached files (file_name); pass include_files=True to keep them" if skipped else ""
    if skipped:
        log.warning("%s: skipped %d of %d rows with %s", path, skipped, len(rows), reason)
    if not tasks:
        raise ValueError(f"{path}: every row was skipped ({skipped} with {reason}).")
    return BenchmarkTasks(tasks, name=fmt, path=path, skipped=skipped, skip_reason=reason)


def _resolve(path: Path) -> Path:
    if path.is_dir() and (path / "metadata.jsonl").is_file():
        return path / "metadata.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"benchmark file {path} does not exist; check the path.")
    return path


def _format_name(name: str) -> str:
    fmt = _ALIASES.get(name.lower(), name.lower())
    if fmt not in FORMATS:
        raise ValueError(f"unknown benchmark format {name!r}; valid names: {', '.join(FORMATS)}.")
    return fmt


def detect_format(path: Path, first_row: Any) -> str:
    """The format of a file from its first row's keys, then its name; ``"jsonl"`` otherwise."""
    keys = set(first_row) if isinstance(first_row, Mapping) else set()
    gaia_keys = {"Final answer", "Annotator Metadata", "Annotator_Metadata"}
    if keys & gaia_keys or {"task_id", "Level"} <= keys:
        return "gaia"
    if keys & {"root_url", "Root_Url", "info", "Info", "difficulty_level"}:
        return "webwalkerqa"
    if "tag" in keys:
        return "webdancer"
    file_name = path.name.lower()
    for hint, fmt in (("gaia", "gaia"), ("metadata", "gaia"), ("webwalker", "webwalkerqa"),
                      ("hotpot", "hotpotqa"), ("webdancer", "webdancer")):
        if hint in file_name:
            return fmt
    return "hotpotqa" if keys & {"idx", "_id"} else "jsonl"


# ---------------------------------------------------------------- reading files


def _read_rows(path: Path) -> list[tuple[int, Any]]:
    """``(line number, parsed row)`` for each row of a JSON list or JSONL file."""
    text = path.read_text(encoding="utf-8-sig")
    if text.lstrip().startswith("["):
        return _json_list_rows(text, path)
    rows = []
    for line_no, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            rows.append((line_no, json.loads(line)))
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}:{line_no}: not valid JSON ({e.msg}); "
                             "fix or remove the line.") from None
    return rows


def _skip_space(text: str, i: int) -> int:
    while i < len(text) and text[i].isspace():
        i += 1
    return i


def _json_list_rows(text: str, path: Path) -> list[tuple[int, Any]]:
    """Parse a top-level JSON list item by item, keeping the line each item starts on."""
    decoder = json.JSONDecoder()
    rows: list[tuple[int, Any]] = []
    i = _skip_space(text, _skip_space(text, 0) + 1)
    line, counted = 1, 0
    while i < len(text) and text[i] != "]":
        line += text.count("\n", counted, i)
        counted = i
        try:
            item, i = decoder.raw_decode(text, i)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}:{e.lineno}: not valid JSON ({e.msg}); "
                             "fix the item.") from None
        rows.append((line, item))
        i = _skip_space(text, i)
        if i < len(text) and text[i] == ",":
            i = _skip_space(text, i + 1)
        elif i < len(text) and text[i] != "]":
            at = text.count("\n", 0, i) + 1
            raise ValueError(f"{path}:{at}: expected ',' or ']' after a list item; fix the file.")
    if i >= len(text) or text[_skip_space(text, i + 1):].strip():
        at = text.count("\n", 0, min(i, len(text))) + 1
        raise ValueError(f"{path}:{at}: the JSON list is not closed by a final ']'; fix the file.")
    return rows


# ---------------------------------------------------------------- row converters


def _get(row: Mapping[str, Any], names: Sequence[str], where: str, what: str) -> Any:
    for key in names:
        if row.get(key) is not None:
            return row[key]
    keys = " or ".join(repr(k) for k in names)
    raise ValueError(f"{where}: missing {keys}; add the {what} or remove the row.")


def _question_answer(row: Mapping[str, Any], where: str,
                     answer_keys: Sequence[str] = ("answer", "Answer")) -> tuple[str, str]:
    question = _get(row, ("question", "Question"), where, "question")
    if not isinstance(question, str) or not question.strip():
        raise ValueError(f"{where}: the question is empty or not a string; fix or remove the row.")
    answer = _get(row, answer_keys, where, "gold answer")
    if isinstance(answer, (dict, list, bool)):
        raise ValueError(f"{where}: the answer must be a string or a number, got "
                         f"{type(answer).__name__}; fix the row.")
    return question.strip(), str(answer)


def _gaia(row: Mapping[str, Any], where: str, path: Path, include_files: bool) -> Task | None:
    question, answer = _question_answer(row, where, ("Final answer", "answer", "Answer"))
    file_name = str(row.get("file_name") or "")
    if file_name and not include_files:
        return None
    level = row.get("Level", row.get("level"))
    if isinstance(level, str) and level.strip().isdigit():
        level = int(level)
    meta: dict[str, Any] = {"benchmark": "gaia", "level": level, "file_name": file_name,
                            "annotator_metadata": row.get("Annotator Metadata",
                                                          row.get("Annotator_Metadata", {}))}
    if file_name:
        meta["file_path"] = str(path.parent / file_name)
    task_id = row.get("task_id", row.get("id", ""))
    return Task(question, answer, str(task_id or ""), None, meta)


_WEBWALKER_KEYS = {"type": "type", "hop": "type", "difficulty_level": "difficulty_level",
                   "domain": "domain", "lang": "lang", "language": "lang",
                   "source_website": "source_website", "golden_path": "golden_path"}
_LANGUAGES = {"english": "en", "chinese": "zh"}


def _webwalker_meta(row: Mapping[str, Any], where: str) -> dict[str, Any]:
    info = row.get("info", row.get("Info", row))
    if not isinstance(info, Mapping):
        raise ValueError(f"{where}: 'info' must be a JSON object; fix the row.")
    meta: dict[str, Any] = {"benchmark": "webwalkerqa"}
    for key, value in info.items():
        name = _WEBWALKER_KEYS.get(key.lower())
        if name is not None and value is not None:
            meta[name] = value
    # Both styles spell categories differently ("multi-source"/"Medium"/"English").
    if isinstance(meta.get("type"), str):
        kind = meta["type"].strip().lower().replace("-", "_").replace(" ", "_")
        meta["type"] = kind if kind.endswith("_source") else f"{kind}_source"
    for key in ("difficulty_level", "domain"):
        if isinstance(meta.get(key), str):
            meta[key] = meta[key].strip().lower()
    if isinstance(meta.get("lang"), str):
        meta["lang"] = _LANGUAGES.get(meta["lang"].strip().lower(), meta["lang"].strip().lower())
    return meta


def _webwalkerqa(row: Mapping[str, Any], where: str, path: Path, include_files: bool) -> Task:
    question, answer = _question_answer(row, where)
    root_url = row.get("root_url", row.get("Root_Url"))
    return Task(question, answer, str(row.get("id", "")), root_url or None,
                _webwalker_meta(row, where))


def _hotpotqa(row: Mapping[str, Any], where: str, path: Path, include_files: bool) -> Task:
    question, answer = _question_answer(row, where)
    meta = {"benchmark": "hotpotqa", **{k: row[k] for k in ("idx", "type", "level") if k in row}}
    task_id = row.get("_id", row.get("id"))
    if task_id is None and "idx" in row:
        task_id = f"hotpotqa-{row['idx']}"
    return Task(question, answer, str(task_id or ""), None, meta)


def _webdancer(row: Mapping[str, Any], where: str, path: Path, include_files: bool) -> Task:
    question, answer = _question_answer(row, where)
    meta = {"benchmark": "webdancer", **({"tag": row["tag"]} if "tag" in row else {})}
    return Task(question, answer, str(row.get("id", "")), None, meta)


def _generic(row: Mapping[str, Any], where: str, path: Path, include_files: bool) -> Task:
    task = Task.from_dict(row, where=where)
    return Task(task.question, task.answer, task.id, task.root_url,
                {"benchmark": "jsonl", **task.meta})


_CONVERTERS: dict[str, Callable[[Mapping[str, Any], str, Path, bool], Task | None]] = {
    "gaia": _gaia, "webwalkerqa": _webwalkerqa, "hotpotqa": _hotpotqa,
    "webdancer": _webdancer, "jsonl": _generic,
}
