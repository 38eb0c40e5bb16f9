"""An OpenAI-compatible chat-completions client on the standard library (vLLM, TGI, llama.cpp, Ollama, OpenAI).

`POST {base_url}/chat/completions` with `model`, `messages`, `max_tokens` and `temperature`.
Transient failures (429, 5xx, timeouts, refused or dropped connections) are retried with
exponential backoff (`backoff`, doubled each time, or the server's Retry-After when longer), at
most `max_retries` times; 401/403/404 and other client errors stop at once with one error naming
the endpoint, the model and the key's environment variable. The key is read from the environment
and only ever sent in the Authorization header.
"""

from __future__ import annotations

import http.client
import json
import os
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from star.annotation.chat import AnnotatorUnavailable, Message, Reply
from star.errors import ConfigError

#: Longest wait between two tries, whatever Retry-After says (seconds).
MAX_DELAY = 120.0
_TRANSIENT_CODES = (408, 409, 425, 429)


class _Transient(Exception):
    """A failure worth another try; `delay` is the server's Retry-After, if it gave one."""

    def __init__(self, what: str, delay: float | None = None) -> None:
        super().__init__(what)
        self.what, self.delay = what, delay


def read_api_key(api_key_env: str | None, environ: Mapping[str, str] = os.environ) -> str | None:
    """The API key from the environment variable `api_key_env` (None: no key); ConfigError when it is unset."""
    if api_key_env is None:
        return None
    key = environ.get(api_key_env, "").strip()
    if not key:
        raise ConfigError(f"llm_annotator.api_key_env={api_key_env!r}: the environment variable {api_key_env} is not set",
                          hint=f"export {api_key_env}=... before `star run` (the key is read from the environment and "
                               "never written to the run), or set llm_annotator.api_key_env=null for a server without a key")
    return key


class OpenAIChat:
    """A `ChatBackend` over HTTP: one request per conversation, so each label is committed as it arrives."""

    batch_size = 1

    def __init__(self, base_url: str, model: str, *, api_key_env: str | None = None, max_tokens: int = 256,
                 temperature: float = 0.0, timeout: float = 60.0, max_retries: int = 5, backoff: float = 1.0,
                 environ: Mapping[str, str] = os.environ, sleep: Callable[[float], None] = time.sleep,
                 urlopen: Callable[..., Any] = urllib.request.urlopen) -> None:
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.base_url, self.model, self.api_key_env = base_url, model, api_key_env
        self.max_tokens, self.temperature, self.timeout = max_tokens, temperature, timeout
        self.max_retries, self.backoff = max_retries, backoff
        self._key = read_api_key(api_key_env, environ)
        self._sleep, self._urlopen = sleep, urlopen

    def complete(self, conversations: Sequence[Sequence[Message]]) -> list[Reply]:
        """One reply per conversation, asked one after another."""
        return [self._ask(messages) for messages in conversations]

    def _request(self, messages: Sequence[Message]) -> urllib.request.Request:
        body = {"model": self.model, "messages": [dict(m) for m in messages], "max_tokens": self.max_tokens,
                "temperature": self.temperature}
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self._key is not None:
            headers["Authorization"] = f"Bearer {self._key}"
        return urllib.request.Request(self.url, data=json.dumps(body).encode("utf-8"), headers=headers, method="POST")

    def _ask(self, messages: Sequence[Message]) -> Reply:
        """One conversation's reply, retrying transient failures with exponential backoff."""
        failures = []
        for attempt in range(self.max_retries + 1):
            try:
                return self._parse(self._post(messages))
            except _Transient as e:
                failures.append(e.what)
                if attempt == self.max_retries:
                    break
                delay = self.backoff * 2 ** attempt
                if e.delay is not None:
                    delay = max(delay, e.delay)
                self._sleep(min(delay, MAX_DELAY))
        raise AnnotatorUnavailable(
            f"the LLM annotator's endpoint {self.url} (model {self.model!r}) failed {len(failures)} time(s): "
            f"{'; '.join(dict.fromkeys(failures))}; every label committed so far is kept",
            hint="check that the server is up and not overloaded (or raise llm_annotator.max_retries / backoff / "
                 "timeout), then continue with `star run --resume DIR`: labels already given are not asked again")

    def _post(self, messages: Sequence[Message]) -> Any:
        """The decoded JSON response; _Transient for what a retry may mend, StarError for what it cannot."""
        try:
            with self._urlopen(self._request(messages), timeout=self.timeout) as response:
                raw = response.read()
        except urllib.error.HTTPError as e:
            raise self._http_error(e) from None
        except urllib.error.URLError as e:
            raise _Transient(f"cannot connect ({e.reason})") from None
        except (TimeoutError, ConnectionError, http.client.HTTPException) as e:
            raise _Transient(f"{type(e).__name__}: {e}" if str(e) else type(e).__name__) from None
        try:
            return json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            raise self._format_error(f"the response is not JSON: {raw[:200]!r}") from None

    def _http_error(self, e: urllib.error.HTTPError) -> Exception:
        """What an HTTP error status means: retry (429, 5xx, ...) or a clear error now."""
        body = _body_text(e)
        if e.code in _TRANSIENT_CODES or e.code >= 500:
            return _Transient(f"HTTP {e.code}", _retry_after(e.headers))
        where = f"{self.url} (llm_annotator.base_url={self.base_url!r}, llm_annotator.model={self.model!r})"
        if e.code in (401, 403):
            key = (f"the key in ${self.api_key_env} (llm_annotator.api_key_env)" if self.api_key_env
                   else "no key (llm_annotator.api_key_env is null)")
            return ConfigError(f"the LLM endpoint {where} refused the request with HTTP {e.code} ({body}); it was sent "
                               f"{key}", hint="set llm_annotator.api_key_env to the environment variable holding a "
                                              "valid key for this server, and export it")
        if e.code == 404:
            return ConfigError(f"the LLM endpoint {where} answered HTTP 404 ({body})",
                               hint="llm_annotator.base_url must be the API root that holds /chat/completions "
                                    "(e.g. http://localhost:8000/v1) and llm_annotator.model a model it serves")
        return ConfigError(f"the LLM endpoint {where} rejected the request with HTTP {e.code} ({body})",
                           hint="check llm_annotator.model, max_new_tokens and temperature against what the server "
                                "accepts")

    def _format_error(self, what: str) -> ConfigError:
        return ConfigError(f"the LLM endpoint {self.url} did not answer in the OpenAI chat-completions format: {what}",
                           hint="point llm_annotator.base_url at an OpenAI-compatible API root (e.g. .../v1)")

    def _parse(self, data: Any) -> Reply:
        """The reply text and token counts of a chat-completions response."""
        try:
            message = data["choices"][0]["message"]
        except (KeyError, IndexError, TypeError):
            raise self._format_error(f"no choices[0].message in {json.dumps(data)[:200]}") from None
        text = message.get("content") if isinstance(message, dict) else None
        usage = data.get("usage") if isinstance(data.get("usage"), dict) else {}
        return Reply(text if isinstance(text, str) else "", _count(usage.get("prompt_tokens")),
                     _count(usage.get("completion_tokens")))


def _count(value: Any) -> int:
    """A token count from `usage` (0 when the server does not report it)."""
    return value if isinstance(value, int) and value >= 0 else 0


def _retry_after(headers: Any) -> float | None:
    """The Retry-After header in seconds, when it is a number."""
    value = headers.get("Retry-After") if headers is not None else None
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


def _body_text(e: urllib.error.HTTPError) -> str:
    """The first 200 characters of an error response's body (the server's own explanation)."""
    try:
        body = e.read().decode("utf-8", "replace").strip()
    except Exception:  # noqa: BLE001 - an unreadable body is only a missing detail
        body = ""
    return body[:200] or str(e.reason or "no body")
