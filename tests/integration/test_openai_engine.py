"""OpenAIEngine against a real OpenAI-compatible server: ``transformers serve`` with
the tiny model, started on loopback by the fixture and stopped after the module."""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import pytest
import requests

from webdancer.agents.engines.base import ENGINES, ChatGeneration, SamplingParams
from webdancer.agents.engines.openai import OpenAIEngine, OpenAIServerError

pytestmark = pytest.mark.timeout(180)

STARTUP_DEADLINE_S = 120.0
# Greedy replies of the random tiny model open with a run of newlines that the server
# strips; 24 tokens are enough for these prompts to reach text that tells them apart.
PROMPTS = ("hello", "what is the capital", "1 2 3")
MAX_NEW_TOKENS = 24
GREEDY = SamplingParams(max_new_tokens=MAX_NEW_TOKENS, temperature=0.0, stop=())


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _serving_available() -> bool:
    try:
        from transformers.utils.import_utils import is_serve_available
    except ImportError:
        return False
    return is_serve_available()


def _wait_ready(proc: subprocess.Popen, url: str, log: Path) -> None:
    deadline = time.monotonic() + STARTUP_DEADLINE_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"transformers serve exited with {proc.returncode}:\n{_tail(log)}")
        try:
            if requests.get(f"{url}/models", timeout=1.0).ok:
                return
        except requests.RequestException:
            pass
        time.sleep(0.25)
    pytest.fail(f"transformers serve was not up within {STARTUP_DEADLINE_S:g} s:\n{_tail(log)}")


def _tail(log: Path) -> str:
    return log.read_text(errors="replace")[-3000:]


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from webdancer.agents.tiny import make_tiny

    return make_tiny(tmp_path_factory.mktemp("openai_engine") / "tiny")


@pytest.fixture(scope="module")
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, Path]]:
    """``(base_url, model_dir)`` of a running ``transformers serve``, tiny model loaded.

    The server starts before the tiny model is built, so that its imports and the
    build overlap; the model, named by its path, loads on a warm-up request."""
    if not _serving_available():
        pytest.skip("transformers serve needs its extra: pip install 'transformers[serving]'.")
    port = _free_port()
    log = tmp_path_factory.mktemp("openai_serve") / "serve.log"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1"}
    cmd = [sys.executable, "-m", "transformers.cli.transformers", "serve",
           "--host", "127.0.0.1", "--port", str(port), "--device", "cpu"]  # fmt: skip
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        model_dir: Path = request.getfixturevalue("tiny_dir")
        base_url = f"http://127.0.0.1:{port}/v1"
        _wait_ready(proc, base_url, log)
        warm_up = {"model": str(model_dir), "messages": _conversation("hi"), "max_tokens": 1}
        resp = requests.post(f"{base_url}/chat/completions", json=warm_up, timeout=60)
        assert resp.ok, f"loading the tiny model failed ({resp.status_code}):\n{_tail(log)}"
        yield base_url, model_dir
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)


@pytest.fixture(scope="module")
def engine(server: tuple[str, Path]) -> Iterator[OpenAIEngine]:
    base_url, model_dir = server
    model = str(model_dir)
    with OpenAIEngine(base_url, model, tokenizer=model, concurrency=4, retries=1) as eng:
        yield eng


def _conversation(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def _greedy_until(*stop: str) -> SamplingParams:
    return SamplingParams(max_new_tokens=MAX_NEW_TOKENS, temperature=0.0, stop=stop)


def _stop_inside(text: str) -> str:
    """A stop string that first occurs in the middle of ``text``."""
    assert len(text) >= 6, f"the greedy reply {text!r} is too short to hold a stop string"
    start = len(text) // 2
    return text[start : start + 3]


def test_registered_as_openai() -> None:
    assert ENGINES.get("openai") is OpenAIEngine


@pytest.fixture(scope="module")
def greedy_replies(engine: OpenAIEngine) -> list[ChatGeneration]:
    """Greedy replies to ``PROMPTS``, asked for in one concurrent batch."""
    return engine.chat([_conversation(p) for p in PROMPTS], GREEDY)


def test_chat_is_batched_in_order(
    engine: OpenAIEngine, greedy_replies: list[ChatGeneration]
) -> None:
    batched = greedy_replies
    one_by_one = [engine.chat([_conversation(p)], GREEDY)[0] for p in PROMPTS]
    assert batched == one_by_one  # greedy, so only the order could differ
    assert len({g.text for g in batched}) > 1, "replies must differ for the order to be checked"
    assert all(g.finish_reason == "length" for g in batched)


def test_chat_cuts_at_stop_strings(
    engine: OpenAIEngine, greedy_replies: list[ChatGeneration]
) -> None:
    row = max(range(len(PROMPTS)), key=lambda i: len(greedy_replies[i].text))
    conversation, full = _conversation(PROMPTS[row]), greedy_replies[row].text
    stop = _stop_inside(full)
    expected = full[: full.index(stop) + len(stop)]
    # The server stops on the string itself.
    by_server = engine.chat([conversation], _greedy_until(stop))[0]
    # Only the first four stop strings are sent: the fifth is applied locally.
    locally = engine.chat([conversation], _greedy_until("@@a", "@@b", "@@c", "@@d", stop))[0]
    # transformers serve leaves a stop string out of the text without naming it (vLLM and
    # SGLang name it, and the engine puts it back: see the stop_reason test below), so
    # from this server the engine can only return the text before the stop.
    assert by_server.text in (expected, expected[: -len(stop)])
    assert locally.text == expected
    for reply in (by_server, locally):
        assert reply.finish_reason == "stop"


def test_generate_falls_back_to_text_prompts(engine: OpenAIEngine) -> None:
    tok = engine.tokenizer
    prompts = [
        tok.apply_chat_template(_conversation(p), add_generation_prompt=True, return_dict=False)
        for p in PROMPTS[:3]
    ]
    engine.prompt_mode = "auto"
    outs = engine.generate(prompts, GREEDY)
    assert engine.prompt_mode == "text"  # transformers serve takes only string prompts
    assert len(outs) == len(prompts)
    for out in outs:
        assert out.finish_reason == "length" and out.stop_string is None
        assert len(out.token_ids) == len(out.logprobs) > 0
        assert all(math.isnan(lp) for lp in out.logprobs)
        assert tok.decode(out.token_ids, skip_special_tokens=True) == out.text

    row = max(range(len(outs)), key=lambda i: len(outs[i].text))
    text = outs[row].text
    stop = _stop_inside(text)
    stopped = engine.generate([prompts[row]], _greedy_until(stop))[0]
    assert stopped.text == text[: text.index(stop) + len(stop)]
    assert (stopped.finish_reason, stopped.stop_string) == ("stop", stop)
    assert tok.decode(stopped.token_ids, skip_special_tokens=True) == stopped.text


def test_token_prompts_rejected_by_server_raise_in_tokens_mode(server: tuple[str, Path]) -> None:
    base_url, model_dir = server
    model = str(model_dir)
    eng = OpenAIEngine(base_url, model, tokenizer=model, prompt_mode="tokens", retries=0)
    with pytest.raises(OpenAIServerError, match="HTTP 4") as err:
        eng.generate([[1, 2, 3]], SamplingParams(max_new_tokens=2))
    assert err.value.status in (400, 422)


def test_unknown_model_names_the_served_ones(server: tuple[str, Path]) -> None:
    base_url, model_dir = server
    eng = OpenAIEngine(base_url, "no-such-model", retries=0)
    with pytest.raises(OpenAIServerError, match="no-such-model") as err:
        eng.chat([_conversation("hi")], SamplingParams(max_new_tokens=2))
    assert str(model_dir) in str(err.value)


def test_wrong_api_root_says_to_end_in_v1(server: tuple[str, Path]) -> None:
    base_url, model_dir = server
    eng = OpenAIEngine(base_url.removesuffix("/v1"), str(model_dir), retries=0)
    with pytest.raises(OpenAIServerError, match="/v1") as err:
        eng.chat([_conversation("hi")], SamplingParams(max_new_tokens=2))
    assert err.value.status == 404


def test_unreachable_endpoint_names_url_and_fix() -> None:
    base_url = f"http://127.0.0.1:{_free_port()}/v1"  # nothing listens there
    eng = OpenAIEngine(base_url, "tiny", retries=2, backoff_s=0.01)
    start = time.monotonic()
    with pytest.raises(OpenAIServerError, match="start the server or fix base_url") as err:
        eng.chat([_conversation("hi")], SamplingParams(max_new_tokens=2))
    assert base_url in str(err.value) and err.value.status is None
    assert time.monotonic() - start < 5.0


# ----- behaviour no well-behaved server shows on demand: a scripted loopback server -----


class _Scripted(BaseHTTPRequestHandler):
    """Answers each POST with the next of ``replies`` (status, JSON body, headers)
    and records ``(path, headers, body)`` of every request in ``seen``."""

    replies: ClassVar[list[tuple[int, dict, dict[str, str]]]] = []
    seen: ClassVar[list[tuple[str, dict[str, str], dict]]] = []
    lock = threading.Lock()

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
        with _Scripted.lock:
            _Scripted.seen.append((self.path, dict(self.headers), body))
            code, reply, headers = _Scripted.replies.pop(0) if _Scripted.replies else (500, {}, {})
        data = json.dumps(reply).encode()
        self.send_response(code)
        for key, value in {"Content-Type": "application/json", **headers}.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture()
def scripted() -> Iterator[str]:
    """Base URL of a ``_Scripted`` server; fill ``_Scripted.replies`` before use."""
    _Scripted.replies, _Scripted.seen = [], []
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Scripted)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_retries_429_and_5xx_then_rebuilds_parsed_reply(scripted: str) -> None:
    call = {"type": "function", "function": {"name": "search", "arguments": '{"query": ["x"]}'}}
    message = {
        "role": "assistant",
        "content": "I will search.",
        "reasoning_content": "Need facts.",
        "tool_calls": [call],
    }
    _Scripted.replies = [
        (429, {"error": {"message": "slow down"}}, {"Retry-After": "0"}),
        (503, {"error": {"message": "warming up"}}, {}),
        (200, {"choices": [{"index": 0, "message": message, "finish_reason": "tool_calls"}]}, {}),
    ]
    eng = OpenAIEngine(scripted, "m", api_key="k", retries=2, backoff_s=0.01)
    reply = eng.chat([_conversation("hi")], SamplingParams(max_new_tokens=8, seed=3))[0]
    assert len(_Scripted.seen) == 3
    path, headers, body = _Scripted.seen[-1]
    assert path == "/v1/chat/completions" and headers["Authorization"] == "Bearer k"
    assert body["messages"] == _conversation("hi")
    assert (body["max_tokens"], body["seed"]) == (8, 3)
    assert body["stop"] == ["</tool_call>", "</answer>", "<tool_response>"]
    assert reply.text == (
        "<think>\nNeed facts.\n</think>\n\nI will search.\n"
        '<tool_call>\n{"name": "search", "arguments": {"query": ["x"]}}\n</tool_call>'
    )
    assert reply.finish_reason == "stop"


def test_server_stripped_stop_string_is_put_back(scripted: str) -> None:
    message = {"role": "assistant", "content": "<answer>Paris"}
    choice = {"index": 0, "message": message, "finish_reason": "stop", "stop_reason": "</answer>"}
    _Scripted.replies = [(200, {"choices": [choice]}, {})]
    reply = OpenAIEngine(scripted, "m").chat([_conversation("hi")], SamplingParams())[0]
    assert (reply.text, reply.finish_reason) == ("<answer>Paris</answer>", "stop")


def test_bad_api_key_says_to_set_it(scripted: str) -> None:
    _Scripted.replies = [(401, {"error": {"message": "Incorrect API key provided."}}, {})]
    eng = OpenAIEngine(scripted, "m", api_key="bad", retries=2, backoff_s=0.01)
    with pytest.raises(OpenAIServerError, match="OPENAI_API_KEY") as err:
        eng.chat([_conversation("hi")], SamplingParams(max_new_tokens=8))
    assert err.value.status == 401 and len(_Scripted.seen) == 1  # auth errors are not retried


def test_token_mode_keeps_ids_and_cuts_at_stop(scripted: str, tiny_dir: Path) -> None:
    """A vLLM-shaped reply (ids as ``token_id:N``) that ran past a stop string."""
    eng = OpenAIEngine(scripted, "m", tokenizer=str(tiny_dir), prompt_mode="tokens", concurrency=2)
    text = '<think>ok</think>\n<tool_call>\n{"name": "search"}\n</tool_call> and more words'
    ids = eng.tokenizer.encode(text, add_special_tokens=False)
    lps = [-0.5 - i for i in range(len(ids))]
    choice = {
        "index": 0,
        "text": text,
        "finish_reason": "length",
        "stop_reason": None,
        "logprobs": {"tokens": [f"token_id:{i}" for i in ids], "token_logprobs": lps},
    }
    _Scripted.replies = [(200, {"choices": [choice]}, {}), (200, {"choices": [choice]}, {})]
    outs = eng.generate([[5, 6, 7], [8, 9]], SamplingParams(max_new_tokens=64, seed=11))
    through_stop = text[: text.index("</tool_call>")] + "</tool_call>"
    keep = len(eng.tokenizer.encode(through_stop, add_special_tokens=False))
    for out in outs:
        assert out.token_ids == ids[:keep] and out.logprobs == lps[:keep]
        assert (out.finish_reason, out.stop_string) == ("stop", "</tool_call>")
        assert out.text.endswith("</tool_call>")
    bodies = sorted((b for _, _, b in _Scripted.seen), key=lambda b: b["seed"])
    assert [b["prompt"] for b in bodies] == [[5, 6, 7], [8, 9]]  # seed + row: row 0 got seed 11
    assert [b["seed"] for b in bodies] == [11, 12]
    assert all(b["logprobs"] == 1 and b["return_tokens_as_token_ids"] for b in bodies)


def test_generate_without_tokenizer_says_to_pass_one() -> None:
    eng = OpenAIEngine("http://127.0.0.1:9/v1", "m")
    with pytest.raises(ValueError, match="tokenizer="):
        eng.generate([[1, 2]], SamplingParams())
