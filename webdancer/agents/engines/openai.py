"""An engine that talks to any OpenAI-compatible HTTP server.

Works with ``vllm serve``, SGLang, llama.cpp's ``llama-server``, TGI, ``transformers
serve`` and hosted APIs. ``base_url`` is the API root including ``/v1``, for example
``http://127.0.0.1:8000/v1``.

``chat`` posts to ``{base_url}/chat/completions`` and returns text. ``generate``
posts to ``{base_url}/completions`` and speaks token ids; how faithfully depends on
the server (see ``OpenAIEngine.generate``).

Requests run on a pool of ``concurrency`` threads; connection errors, HTTP 429 and
HTTP 5xx are retried with exponential backoff (``Retry-After`` wins when the server
sends it); every other failure raises ``OpenAIServerError`` with one sentence that
names the server and the fix.

Server notes. vLLM and SGLang take token-id prompts and return sampled ids with
logprobs. ``transformers serve`` (``pip install "transformers[serving]"``) takes only
string prompts, rejects request fields it does not know (``top_k`` included, so leave
``top_k=0``), samples only when the model's ``generation_config`` has
``do_sample=True`` (otherwise decoding is greedy whatever the temperature), and splits
Qwen-style replies into reasoning, content and tool calls, which ``chat`` joins back.
"""

from __future__ import annotations

import email.utils
import json
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, TypeVar

import requests
from requests.adapters import HTTPAdapter

from webdancer.agents.engines.base import (
    ENGINES,
    EOS_STOP,
    ChatGeneration,
    Generation,
    SamplingParams,
    cut_at_stop,
    find_stop,
)

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase
    from typing_extensions import Self

T = TypeVar("T")
R = TypeVar("R")

PROMPT_MODES = ("auto", "tokens", "text")
# The OpenAI API rejects more than four stop strings; the rest are applied locally.
MAX_SERVER_STOPS = 4
MAX_BACKOFF_S = 60.0
_TOKEN_ID_PREFIX = "token_id:"


class OpenAIServerError(RuntimeError):
    """A request to an OpenAI-compatible server failed; ``status`` is the HTTP status
    code, or ``None`` when the server could not be reached or did not answer."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class OpenAIEngine:
    """Chat and token-level generation through an OpenAI-compatible server.

    Args:
        base_url: API root including ``/v1``, e.g. ``http://127.0.0.1:8000/v1``.
        model: model name the server serves (``GET {base_url}/models`` lists them).
        api_key: bearer token; defaults to the ``OPENAI_API_KEY`` environment variable
            and is left out of the requests when neither is set.
        tokenizer: the model's tokenizer, or a path/name to load one with
            ``AutoTokenizer``; needed by ``generate`` only.
        concurrency: requests in flight at once.
        timeout_s: seconds to wait for one response (connecting waits at most 10 s).
        retries: extra attempts after a connection error, HTTP 429 or HTTP 5xx.
        backoff_s: wait before the first retry; doubles on each further retry.
        prompt_mode: how ``generate`` sends prompts: ``"tokens"`` (token ids in, token
            ids and logprobs out), ``"text"`` (decoded text in, re-tokenized text out,
            logprobs NaN) or ``"auto"`` (tokens, then text for good once the server
            rejects token-id prompts).
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key: str | None = None,
        tokenizer: PreTrainedTokenizerBase | str | None = None,
        concurrency: int = 8,
        timeout_s: float = 120.0,
        retries: int = 3,
        backoff_s: float = 1.0,
        prompt_mode: str = "auto",
    ) -> None:
        if concurrency < 1:
            raise ValueError(f"concurrency={concurrency} must be at least 1.")
        if retries < 0:
            raise ValueError(f"retries={retries} must be >= 0.")
        if prompt_mode not in PROMPT_MODES:
            raise ValueError(
                f"prompt_mode={prompt_mode!r} is not one of {', '.join(PROMPT_MODES)}."
            )
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.concurrency = concurrency
        self.timeout_s = float(timeout_s)
        self.retries = retries
        self.backoff_s = float(backoff_s)
        self.prompt_mode = prompt_mode
        if isinstance(tokenizer, str):
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(tokenizer)
        self.tokenizer = tokenizer
        key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY")
        self._headers = {"Content-Type": "application/json"}
        if key:
            self._headers["Authorization"] = f"Bearer {key}"
        self._session = requests.Session()
        adapter = HTTPAdapter(pool_connections=1, pool_maxsize=concurrency)
        self._session.mount("http://", adapter)
        self._session.mount("https://", adapter)

    # ----- public API -----

    def chat(
        self, conversations: Sequence[Sequence[Mapping[str, str]]], params: SamplingParams
    ) -> list[ChatGeneration]:
        """One reply per conversation, in input order.

        Each conversation is a list of ``{"role", "content"}`` messages. The reply is
        cut after the earliest stop string of ``params.stop`` (kept, so tags close),
        also when the server ignored or stripped it. Servers that split a reply into
        ``reasoning_content`` and ``tool_calls`` get it put back together as
        ``<think>…</think>`` and ``<tool_call>{json}</tool_call>`` around the content.
        With ``params.seed`` set, conversation ``i`` is sampled with seed ``seed + i``.
        """
        rows = list(enumerate(conversations))
        return self._map(lambda row: self._chat_one(row[1], params, row[0]), rows)

    def generate(
        self, prompts: Sequence[Sequence[int]], params: SamplingParams
    ) -> list[Generation]:
        """One ``Generation`` per prompt of token ids, in input order.

        Token mode (vLLM, SGLang): the ids go to ``/completions`` as the prompt with
        ``logprobs=1`` and vLLM's ``return_tokens_as_token_ids``, so the ids come back
        exactly as sampled with the server's logprobs. Those are the logprobs the
        server reports: vLLM's are before temperature/top-p unless it runs with
        ``--logprobs-mode processed_logprobs``; recompute them in the trainer when it
        matters.

        Text mode (servers that accept only string prompts, e.g. ``transformers
        serve``): the prompt is decoded with the tokenizer, sent as text, and the reply
        re-tokenized; the ids are then what the tokenizer makes of the text, not
        necessarily what was sampled, and **every logprob is NaN**. A reply that ended
        on EOS (or on a stop the server does not name) gets ``tokenizer.eos_token_id``
        appended. In ``"auto"`` mode a 400/422 answer to a token-id prompt followed by
        a successful text prompt switches the engine to text mode. There is no fallback to
        ``/chat/completions``: it would wrap the already-templated prompt in a second
        chat template.

        In both modes the output is cut after the earliest stop string (kept); only the
        first four stop strings are sent to the server, the rest are applied locally.
        """
        if self.tokenizer is None:
            raise ValueError(
                "OpenAIEngine.generate needs the model's tokenizer; pass tokenizer= "
                "(a tokenizer or the path of the model directory)."
            )
        rows = [(i, _token_ids(prompt, i)) for i, prompt in enumerate(prompts)]
        return self._map(lambda row: self._generate_one(row[1], params, row[0]), rows)

    def list_models(self) -> list[str]:
        """Names of the models ``GET {base_url}/models`` lists."""
        data = self._request("GET", "models")
        return [str(m.get("id")) for m in data.get("data", []) if isinstance(m, Mapping)]

    def close(self) -> None:
        """Close the HTTP connections."""
        self._session.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ----- chat -----

    def _chat_one(
        self, messages: Sequence[Mapping[str, str]], params: SamplingParams, row: int
    ) -> ChatGeneration:
        body = {"model": self.model, "messages": [dict(m) for m in messages]}
        body.update(self._sampling_fields(params, row))
        data = self._request("POST", "chat/completions", body)
        choice = _first_choice(data, self.base_url)
        text = _message_text(choice.get("message") or {})
        text, stop = cut_at_stop(text, params.stop)
        if stop is None:
            stop = _server_stop_string(choice, params.stop)
            if stop is not None:
                text += stop  # the server hit it and left it out
        length = stop is None and choice.get("finish_reason") == "length"
        return ChatGeneration(text=text, finish_reason="length" if length else "stop")

    # ----- completions -----

    def _generate_one(self, prompt: list[int], params: SamplingParams, row: int) -> Generation:
        mode = self.prompt_mode
        if mode == "text":
            return self._complete_text(prompt, params, row)
        try:
            return self._complete_tokens(prompt, params, row)
        except OpenAIServerError as err:
            if mode == "tokens" or err.status not in (400, 422):
                raise
        # Switch only once a text prompt works, so that a bad request (say, a prompt
        # too long) does not move a token-capable server to text mode.
        generation = self._complete_text(prompt, params, row)
        self.prompt_mode = "text"
        return generation

    def _complete_tokens(
        self, prompt: list[int], params: SamplingParams, row: int
    ) -> Generation:
        body: dict[str, Any] = {"model": self.model, "prompt": prompt, "logprobs": 1}
        body.update(self._sampling_fields(params, row))
        # vLLM extras: ids instead of token strings, the stop string kept in the output,
        # and special tokens kept so that stop strings made of them are seen.
        body.update(
            return_tokens_as_token_ids=True,
            include_stop_str_in_output=True,
            skip_special_tokens=False,
        )
        choice = _first_choice(self._request("POST", "completions", body), self.base_url)
        ids, logprobs = _choice_token_ids(choice)
        if ids is None:
            # The server took the ids but reports tokens as text: re-tokenize instead.
            return self._generation_from_text(choice, params)
        return self._generation_from_ids(ids, logprobs, choice, params)

    def _complete_text(self, prompt: list[int], params: SamplingParams, row: int) -> Generation:
        text = self.tokenizer.decode(prompt, skip_special_tokens=False)
        body: dict[str, Any] = {"model": self.model, "prompt": text}
        body.update(self._sampling_fields(params, row))
        choice = _first_choice(self._request("POST", "completions", body), self.base_url)
        return self._generation_from_text(choice, params)

    def _generation_from_ids(
        self,
        ids: list[int],
        logprobs: list[float],
        choice: Mapping[str, Any],
        params: SamplingParams,
    ) -> Generation:
        text = self._decode(ids)
        stop = find_stop(text, params.stop)
        if stop is not None:
            keep = self._tokens_through_stop(ids, stop)
            ids, logprobs = ids[:keep], logprobs[:keep]
            finish = "stop"
        elif choice.get("finish_reason") == "length":
            finish = "length"
        else:
            finish, stop = "stop", _server_stop_string(choice, params.stop) or EOS_STOP
        return Generation(
            token_ids=ids,
            logprobs=logprobs,
            finish_reason=finish,
            stop_string=stop,
            text=self._decode(ids),
        )

    def _generation_from_text(
        self, choice: Mapping[str, Any], params: SamplingParams
    ) -> Generation:
        text, stop = cut_at_stop(str(choice.get("text") or ""), params.stop)
        reason = choice.get("finish_reason")
        if stop is None and reason != "length":
            stop = _server_stop_string(choice, params.stop)
            if stop is not None:
                text += stop
        ids = list(self.tokenizer.encode(text, add_special_tokens=False))
        if stop is None and reason != "length":
            stop = EOS_STOP
            if self.tokenizer.eos_token_id is not None:
                ids.append(int(self.tokenizer.eos_token_id))
        return Generation(
            token_ids=ids,
            logprobs=[math.nan] * len(ids),
            finish_reason="length" if stop is None else "stop",
            stop_string=stop,
            text=text,
        )

    def _decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=True)

    def _tokens_through_stop(self, ids: list[int], stop: str) -> int:
        """The fewest leading tokens whose text contains ``stop``: a prefix that
        contains it stays containing it, so binary search finds the boundary."""
        lo, hi = 1, len(ids)
        while lo < hi:
            mid = (lo + hi) // 2
            if stop in self._decode(ids[:mid]):
                hi = mid
            else:
                lo = mid + 1
        return hi

    # ----- HTTP -----

    def _sampling_fields(self, params: SamplingParams, row: int) -> dict[str, Any]:
        fields: dict[str, Any] = {
            "max_tokens": params.max_new_tokens,
            "temperature": params.temperature,
            "top_p": params.top_p,
        }
        if params.stop:
            fields["stop"] = list(params.stop[:MAX_SERVER_STOPS])
        if params.seed is not None:
            # A distinct seed per row, or a group of identical prompts would get
            # identical samples.
            fields["seed"] = params.seed + row
        if params.top_k > 0:
            fields["top_k"] = params.top_k  # not OpenAI's; vLLM, SGLang and llama.cpp take it
        return fields

    def _request(
        self, method: str, path: str, body: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        url = f"{self.base_url}/{path}"
        timeout = (min(10.0, self.timeout_s), self.timeout_s)  # (connect, read)
        for attempt in range(self.retries + 1):
            last = attempt == self.retries
            try:
                resp = self._session.request(
                    method, url, json=body, headers=self._headers, timeout=timeout
                )
            except requests.exceptions.ConnectionError as err:
                if last:
                    raise OpenAIServerError(
                        f"cannot reach an OpenAI-compatible server at {self.base_url} "
                        f"({type(err).__name__} after {attempt + 1} attempts); start the server "
                        "or fix base_url."
                    ) from err
                time.sleep(self._backoff(attempt, None))
                continue
            except requests.exceptions.Timeout as err:
                raise OpenAIServerError(
                    f"{url} did not answer within {self.timeout_s:g} s; raise timeout_s or "
                    "lower max_new_tokens."
                ) from err
            retryable = resp.status_code == 429 or resp.status_code >= 500
            if retryable and not last:
                time.sleep(self._backoff(attempt, resp.headers.get("Retry-After")))
                continue
            if resp.status_code >= 400:
                raise self._http_error(resp, url, attempt + 1)
            try:
                return resp.json()
            except ValueError as err:
                raise OpenAIServerError(
                    f"{url} answered HTTP {resp.status_code} with something that is not JSON "
                    f"({resp.text[:80]!r}); point base_url at the API root ending in /v1.",
                    resp.status_code,
                ) from err
        raise AssertionError("unreachable")  # the loop returns or raises

    def _backoff(self, attempt: int, retry_after: str | None) -> float:
        wait = _retry_after_s(retry_after)
        if wait is None:
            wait = self.backoff_s * (2**attempt)
        return min(max(wait, 0.0), MAX_BACKOFF_S)

    def _http_error(
        self, resp: requests.Response, url: str, attempts: int
    ) -> OpenAIServerError:
        code = resp.status_code
        detail = _error_detail(resp)
        where = f"the server at {self.base_url}"
        if code in (401, 403):
            msg = (
                f"{where} refused the API key (HTTP {code}: {detail}); set OPENAI_API_KEY "
                "or pass api_key= to OpenAIEngine."
            )
        elif code == 429:
            msg = (
                f"{where} kept rate-limiting after {attempts} attempts (HTTP 429: {detail}); "
                "lower concurrency or raise retries/backoff_s."
            )
        elif (code in (400, 404) or code >= 500) and (served := self._served_models()) and (
            self.model not in served
        ):
            # Servers answer an unknown model with 404 (OpenAI, vLLM), 400 (a server
            # pinned to one model) or 500 (one that tried to load it): the listing decides.
            msg = (
                f"{where} does not serve model {self.model!r} (HTTP {code}: {detail}); "
                f"use one of: {', '.join(served)}."
            )
        elif code >= 500:
            msg = (
                f"{where} failed after {attempts} attempts (HTTP {code}: {detail}); "
                "check the server's log."
            )
        elif code == 404:
            msg = (
                f"{url} does not exist (HTTP 404: {detail}); base_url must be the API root "
                "ending in /v1, e.g. http://127.0.0.1:8000/v1."
            )
        else:
            msg = (
                f"{where} rejected the request to {url} (HTTP {code}: {detail}); "
                "fix the request or the server's options."
            )
        return OpenAIServerError(msg, code)

    def _served_models(self) -> list[str]:
        """The listed model names, or ``[]`` when the server does not list them."""
        try:
            # A fresh connection: uvicorn resets the pooled one after an unhandled error.
            url = f"{self.base_url}/models"
            resp = requests.get(url, headers=self._headers, timeout=5.0)
            data = resp.json() if resp.ok else {}
        except (requests.RequestException, ValueError):
            return []
        entries = data.get("data", []) if isinstance(data, Mapping) else []
        return [str(m["id"]) for m in entries if isinstance(m, Mapping) and "id" in m]

    def _map(self, fn: Callable[[T], R], items: list[T]) -> list[R]:
        """``fn`` over ``items`` on up to ``concurrency`` threads, results in input order."""
        if len(items) <= 1 or self.concurrency == 1:
            return [fn(item) for item in items]
        with ThreadPoolExecutor(max_workers=min(self.concurrency, len(items))) as pool:
            return list(pool.map(fn, items))


# ----- response parsing -----


def _first_choice(data: Mapping[str, Any], base_url: str) -> Mapping[str, Any]:
    choices = data.get("choices") if isinstance(data, Mapping) else None
    if not choices or not isinstance(choices[0], Mapping):
        raise OpenAIServerError(
            f"the server at {base_url} answered without choices ({str(data)[:120]}); "
            "check that it is an OpenAI-compatible endpoint."
        )
    return choices[0]


def _token_ids(prompt: Sequence[int], index: int) -> list[int]:
    try:
        return [int(t) for t in prompt]
    except (TypeError, ValueError):
        raise TypeError(
            f"prompt {index} is not a sequence of token ids ({str(prompt)[:60]}); pass lists "
            "of ints, e.g. tokenizer.apply_chat_template(..., return_dict=False)."
        ) from None


def _message_text(message: Mapping[str, Any]) -> str:
    """The assistant text, with reasoning and tool calls that the server parsed out
    put back as ``<think>…</think>`` before and ``<tool_call>…</tool_call>`` after."""
    content = message.get("content")
    if isinstance(content, list):  # content parts
        content = "".join(str(p.get("text", "")) for p in content if isinstance(p, Mapping))
    text = str(content or "")
    reasoning = message.get("reasoning_content") or message.get("reasoning")
    if reasoning:
        text = f"<think>\n{reasoning}\n</think>\n\n{text}"
    for call in message.get("tool_calls") or []:
        fn = call.get("function", call) if isinstance(call, Mapping) else {}
        name, arguments = fn.get("name"), fn.get("arguments", {})
        try:
            parsed = json.loads(arguments) if isinstance(arguments, str) else arguments
            payload = json.dumps({"name": name, "arguments": parsed}, ensure_ascii=False)
        except ValueError:
            # Malformed JSON stays as the model wrote it, so that it still reads as invalid.
            payload = f'{{"name": {json.dumps(name)}, "arguments": {arguments}}}'
        separator = "\n" if text else ""
        text += f"{separator}<tool_call>\n{payload}\n</tool_call>"
    return text


def _server_stop_string(choice: Mapping[str, Any], stops: Sequence[str]) -> str | None:
    """The stop string the server says it hit (vLLM ``stop_reason``, SGLang
    ``matched_stop``), when it is one of ``stops``."""
    for key in ("stop_reason", "matched_stop"):
        value = choice.get(key)
        if isinstance(value, str) and value in stops:
            return value
    return None


def _choice_token_ids(choice: Mapping[str, Any]) -> tuple[list[int] | None, list[float]]:
    """Token ids and logprobs from a completion choice's ``logprobs`` when the server
    names tokens as ``token_id:N``; ``(None, [])`` otherwise."""
    logprobs = choice.get("logprobs")
    if not isinstance(logprobs, Mapping):
        return None, []
    tokens = logprobs.get("tokens") or []
    values = logprobs.get("token_logprobs") or []
    ids: list[int] = []
    for token in tokens:
        if not (isinstance(token, str) and token.startswith(_TOKEN_ID_PREFIX)):
            return None, []
        ids.append(int(token[len(_TOKEN_ID_PREFIX) :]))
    if not ids and choice.get("text"):
        return None, []
    lps = [math.nan if v is None else float(v) for v in values]
    if len(lps) != len(ids):
        lps = [math.nan] * len(ids)
    return ids, lps


def _error_detail(resp: requests.Response) -> str:
    """The server's own error message, from any of the usual JSON shapes."""
    try:
        data = resp.json()
    except ValueError:
        return resp.text.strip()[:300] or resp.reason or "no detail"
    if isinstance(data, Mapping):
        for key in ("error", "detail", "message"):
            value = data.get(key)
            if isinstance(value, Mapping):
                value = value.get("message") or value
            if value:
                return str(value)[:300]
    return str(data)[:300]


def _retry_after_s(value: str | None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (seconds or an HTTP date)."""
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return when.timestamp() - time.time()


ENGINES.register("openai", OpenAIEngine)
