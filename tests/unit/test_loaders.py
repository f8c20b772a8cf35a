from __future__ import annotations

import json
import logging
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from webdancer.eval.loaders import BenchmarkTasks, detect_format, load_benchmark

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "benchmarks"


def shared_file(name: str) -> Path:
    path = SHARED / name
    if not path.is_file():
        pytest.skip(f"{path} is absent; these tests need the shared data folder at ../shared/data.")
    return path


def write_jsonl(path: Path, rows: list[Any]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def write_json(path: Path, rows: list[Any]) -> Path:
    path.write_text(json.dumps(rows, indent=2), encoding="utf-8")
    return path


# ------------------------------------------------------------------ shared files


def test_shared_webwalkerqa_680() -> None:
    tasks = load_benchmark(shared_file("webwalkerqa_680.json"))
    assert isinstance(tasks, BenchmarkTasks) and tasks.name == "webwalkerqa"
    assert len(tasks) == 680 and tasks.skipped == 0
    cells = Counter((t.meta["type"], t.meta["difficulty_level"]) for t in tasks)
    assert set(cells) == {(s, d) for s in ("single_source", "multi_source")
                          for d in ("easy", "medium", "hard")}
    assert sum(cells.values()) == 680
    first = tasks[0]
    assert first.question.startswith("Which program funded the SUPPLY project")
    assert first.root_url == "https://ehaweb.org/"
    assert first.meta["domain"] == "conference" and first.meta["lang"] == "en"
    assert first.meta["golden_path"] == ["root->News & views->Read more"]
    assert first.meta["source_website"][0].startswith("https://ehaweb.org/")
    assert all(t.root_url for t in tasks)
    assert len({t.id for t in tasks}) == 680


def test_shared_hotpotqa_500() -> None:
    tasks = load_benchmark(shared_file("hotpotqa_dev_500.jsonl"))
    assert tasks.name == "hotpotqa" and len(tasks) == 500
    assert tasks[0].id == "hotpotqa-1" and tasks[0].meta["idx"] == 1
    assert tasks[0].answer == "Kauffman Stadium"
    assert "gen_text_store" not in tasks[0].meta


def test_shared_webdancer_qa_200() -> None:
    tasks = load_benchmark(shared_file("webdancer_sample_qa.jsonl"))
    assert tasks.name == "webdancer" and len(tasks) == 200
    assert set(Counter(t.meta["tag"] for t in tasks)) == {"e2hqa", "crawlqa"}
    assert all(t.question and t.answer for t in tasks)


def test_forced_name_overrides_detection() -> None:
    tasks = load_benchmark(shared_file("webdancer_sample_qa.jsonl"), name="jsonl")
    assert tasks.name == "jsonl" and tasks[0].meta["tag"] in {"e2hqa", "crawlqa"}
    with pytest.raises(ValueError, match="unknown benchmark format 'gia'; valid names: gaia"):
        load_benchmark(shared_file("webdancer_sample_qa.jsonl"), name="gia")


# ------------------------------------------------------------------ GAIA fixtures
# Made-up rows in GAIA's two layouts; no GAIA data is shipped.

GAIA_METADATA = [
    {"task_id": "t-1", "Question": "How many legs does a spider have?", "Level": 1,
     "Final answer": "8", "file_name": "",
     "Annotator Metadata": {"Steps": "1. count", "Number of steps": "1",
                            "How long did this take?": "1 minute", "Tools": "None",
                            "Number of tools": "0"}},
    {"task_id": "t-2", "Question": "What is in the attached sheet?", "Level": "2",
     "Final answer": "apples, pears", "file_name": "t-2.xlsx", "Annotator Metadata": {}},
    {"task_id": "t-3", "Question": "Which river flows through Paris?", "Level": 3,
     "Final answer": "Seine", "file_name": "", "Annotator Metadata": {}},
]

GAIA_DEV = [
    {"id": 0, "task_id": "t-1", "Question": "How many legs does a spider have?", "answer": "8",
     "Level": 1, "Annotator_Metadata": {"Steps": "1. count"}},
    {"id": 1, "task_id": "t-3", "Question": "Which river flows through Paris?", "answer": "Seine",
     "Level": 3, "Annotator_Metadata": {}},
]


def test_gaia_metadata_jsonl_skips_attachments(tmp_path: Path,
                                               caplog: pytest.LogCaptureFixture) -> None:
    path = write_jsonl(tmp_path / "metadata.jsonl", GAIA_METADATA)
    with caplog.at_level(logging.WARNING, logger="webdancer.eval.loaders"):
        tasks = load_benchmark(path)
    assert tasks.name == "gaia" and [t.id for t in tasks] == ["t-1", "t-3"]
    assert tasks.skipped == 1 and "include_files=True" in tasks.skip_reason
    assert "skipped 1 of 3 rows" in caplog.text
    spider = tasks[0]
    assert spider.answer == "8" and spider.meta["level"] == 1 and spider.meta["benchmark"] == "gaia"
    assert spider.meta["annotator_metadata"]["Number of tools"] == "0"
    assert spider.root_url is None


def test_gaia_include_files_and_folder_path(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "metadata.jsonl", GAIA_METADATA)
    tasks = load_benchmark(tmp_path, include_files=True)  # a folder holding metadata.jsonl
    assert len(tasks) == 3 and tasks.skipped == 0
    sheet = tasks[1]
    assert sheet.meta["level"] == 2  # "2" read as an int
    assert sheet.meta["file_path"] == str(tmp_path / "t-2.xlsx")


def test_gaia_webthinker_dev_json(tmp_path: Path) -> None:
    tasks = load_benchmark(write_json(tmp_path / "dev.json", GAIA_DEV))
    assert tasks.name == "gaia" and [t.id for t in tasks] == ["t-1", "t-3"]
    assert [t.meta["level"] for t in tasks] == [1, 3]
    assert tasks[1].answer == "Seine"
    assert tasks[0].meta["annotator_metadata"] == {"Steps": "1. count"}


def test_gaia_all_rows_skipped_says_how_to_keep_them(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "metadata.jsonl", [GAIA_METADATA[1]])
    with pytest.raises(ValueError, match="every row was skipped.*include_files=True"):
        load_benchmark(path)


# ------------------------------------------------------------------ WebWalkerQA key styles


def test_webwalkerqa_readme_style_capitalized(tmp_path: Path) -> None:
    row = {"Question": "When is the deadline?", "Answer": "March 21, 2025.",
           "Root_Url": "https://conf.example/",
           "Info": {"Hop": "multi-source", "Domain": "Conference", "Language": "English",
                    "Difficulty_Level": "Medium",
                    "Source_Website": ["https://conf.example/calls/",
                                       "https://conf.example/venue/"],
                    "Golden_Path": ["root->calls", "root->venue"]}}
    [task] = load_benchmark(write_json(tmp_path / "ww.json", [row]))
    assert task.answer == "March 21, 2025." and task.root_url == "https://conf.example/"
    assert task.meta == {"benchmark": "webwalkerqa", "type": "multi_source",
                         "domain": "conference", "lang": "en", "difficulty_level": "medium",
                         "source_website": ["https://conf.example/calls/",
                                            "https://conf.example/venue/"],
                         "golden_path": ["root->calls", "root->venue"]}


def test_webwalkerqa_lowercase_nested_jsonl(tmp_path: Path) -> None:
    row = {"question": "Who chairs it?", "answer": "Ada", "root_url": "https://org.example/",
           "info": {"type": "single_source", "difficulty_level": "hard", "domain": "organization",
                    "lang": "en", "source_website": ["https://org.example/team"],
                    "golden_path": ["root->team"]}}
    tasks = load_benchmark(write_jsonl(tmp_path / "walk.jsonl", [row, {**row, "question": "Q2?"}]))
    assert tasks.name == "webwalkerqa" and len(tasks) == 2
    assert tasks[0].meta["type"] == "single_source" and tasks[0].meta["difficulty_level"] == "hard"
    assert tasks[0].id != tasks[1].id


# ------------------------------------------------------------------ detection and errors


@pytest.mark.parametrize("file_name,row,expected", [
    ("x.jsonl", {"task_id": "a", "Level": 1, "Question": "q", "Final answer": "a"}, "gaia"),
    ("x.jsonl", {"question": "q", "answer": "a", "root_url": "u"}, "webwalkerqa"),
    ("x.jsonl", {"question": "q", "answer": "a", "tag": "e2hqa"}, "webdancer"),
    ("hotpot_dev.jsonl", {"question": "q", "answer": "a"}, "hotpotqa"),
    ("x.jsonl", {"idx": 3, "question": "q", "answer": "a"}, "hotpotqa"),
    ("x.jsonl", {"question": "q", "answer": "a"}, "jsonl"),
])
def test_detect_format(file_name: str, row: dict[str, Any], expected: str) -> None:
    assert detect_format(Path(file_name), row) == expected


def test_generic_jsonl_keeps_ids_and_meta(tmp_path: Path) -> None:
    rows = [{"id": "a", "question": "q1", "answer": 3, "meta": {"hops": 2}},
            {"question": "q2", "answer": "b", "root_url": "https://x.example/"}]
    tasks = load_benchmark(write_jsonl(tmp_path / "mine.jsonl", rows))
    assert tasks.name == "jsonl" and tasks[0].id == "a" and tasks[0].answer == "3"
    assert tasks[0].meta == {"benchmark": "jsonl", "hops": 2}
    assert tasks[1].id == "mine-1" and tasks[1].root_url == "https://x.example/"


def test_bad_jsonl_line_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "data.jsonl"
    lines = [json.dumps({"question": f"q{i}", "answer": "a"}) for i in range(6)] + ['{"question": ']
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(ValueError,
                       match=r"data\.jsonl:7: not valid JSON \(.*\); fix or remove the line"):
        load_benchmark(path)


def test_missing_answer_names_the_key(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "qa.jsonl", [{"question": "q", "answer": "a", "tag": "e2hqa"},
                                               {"question": "q2", "tag": "e2hqa"}])
    with pytest.raises(ValueError,
                       match=r"qa\.jsonl:2: missing 'answer' or 'Answer'; add the gold"):
        load_benchmark(path)


def test_missing_gaia_answer_names_final_answer(tmp_path: Path) -> None:
    row = {k: v for k, v in GAIA_METADATA[0].items() if k != "Final answer"}
    path = write_jsonl(tmp_path / "metadata.jsonl", [GAIA_METADATA[2], row])
    with pytest.raises(ValueError, match=r"metadata\.jsonl:2: missing 'Final answer'"):
        load_benchmark(path)


def test_missing_question_in_json_list_gives_item_line(tmp_path: Path) -> None:
    rows = [{"Question": "q1", "answer": "a", "root_url": "u"}, {"answer": "b", "root_url": "u"}]
    path = write_json(tmp_path / "ww.json", rows)
    # indent=2: item 1 starts on line 2 and has 5 lines, so item 2 starts on line 7
    with pytest.raises(ValueError, match=r"ww\.json:7: missing 'question' or 'Question'"):
        load_benchmark(path)


def test_broken_json_list_gives_line(tmp_path: Path) -> None:
    path = tmp_path / "ww.json"
    path.write_text('[\n  {"Question": "q", "answer": "a"},\n'
                    '  {"Question": "q2" "answer": "b"}\n]\n')
    with pytest.raises(ValueError, match=r"ww\.json:3: not valid JSON \(Expecting ','"):
        load_benchmark(path)
    path.write_text('[\n  {"Question": "q", "answer": "a"}\n')
    with pytest.raises(ValueError, match=r"ww\.json:\d+: the JSON list is not closed"):
        load_benchmark(path)


def test_other_row_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"x\.jsonl:2: expected a JSON object, got list"):
        load_benchmark(write_jsonl(tmp_path / "x.jsonl", [{"question": "q", "answer": "a"}, [1]]))
    with pytest.raises(ValueError, match=r"y\.jsonl:2: task id 'a' repeats line 1"):
        load_benchmark(write_jsonl(tmp_path / "y.jsonl",
                                   [{"id": "a", "question": "q", "answer": "1"},
                                    {"id": "a", "question": "r", "answer": "2"}]))
    with pytest.raises(ValueError, match=r"z\.jsonl:1: the answer must be a string or a number"):
        load_benchmark(write_jsonl(tmp_path / "z.jsonl", [{"question": "q", "answer": ["a"],
                                                           "tag": "t"}]))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_benchmark(tmp_path / "nope.jsonl")
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(ValueError, match="holds no rows"):
        load_benchmark(tmp_path / "empty.jsonl")
