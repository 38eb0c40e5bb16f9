"""The OpenAI-compatible client on a fake transport and a fake clock: what it sends, what it retries and
with which waits, and which failures stop at once with an error naming the endpoint, model and key variable."""

from __future__ import annotations

import email.message
import io
import json
import urllib.error

import pytest

from star.annotation.chat import AnnotatorUnavailable
from star.annotation.openai_chat import MAX_DELAY, OpenAIChat
from star.errors import ConfigError

URL = "http://127.0.0.1:8000/v1"
OK = {"choices": [{"message": {"role": "assistant", "content": "The final answer is 4"}}],
      "usage": {"prompt_tokens": 31, "completion_tokens": 7}}
MESSAGES = [{"role": "system", "content": "Be exact."}, {"role": "user", "content": "2 + 2?"}]


class Response(io.BytesIO):
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def http_error(code: int, body: str = "", retry_after: str | None = None) -> urllib.error.HTTPError:
    headers = email.message.Message()
    if retry_after is not None:
        headers["Retry-After"] = retry_after
    return urllib.error.HTTPError(URL + "/chat/completions", code, "status", headers, io.BytesIO(body.encode()))


class Transport:
    """Plays `outcomes` in order (an exception is raised, a dict is the JSON body); records requests and sleeps."""

    def __init__(self, *outcomes: object) -> None:
        self.outcomes, self.requests, self.sleeps, self.timeouts = list(outcomes), [], [], []

    def urlopen(self, request, timeout):
        self.requests.append(request)
        self.timeouts.append(timeout)
        outcome = self.outcomes.pop(0)
        if isinstance(outcome, BaseException):
            raise outcome
        return Response(outcome if isinstance(outcome, bytes) else json.dumps(outcome).encode())

    def client(self, **kw: object) -> OpenAIChat:
        settings = {"model": "qwen-72b", "max_retries": 3, "backoff": 1.0, "environ": {}, **kw}
        return OpenAIChat(URL, sleep=self.sleeps.append, urlopen=self.urlopen, **settings)


def test_a_request_in_the_openai_chat_format_and_its_reply():
    t = Transport(OK)
    client = t.client(api_key_env="MY_KEY", environ={"MY_KEY": "sk-test-1"}, max_tokens=64, temperature=0.0,
                      timeout=12.5)
    [reply] = client.complete([MESSAGES])
    assert (reply.text, reply.prompt_tokens, reply.completion_tokens) == ("The final answer is 4", 31, 7)
    [request] = t.requests
    assert request.full_url == URL + "/chat/completions" and request.get_method() == "POST"
    assert json.loads(request.data) == {"model": "qwen-72b", "messages": MESSAGES, "max_tokens": 64, "temperature": 0.0}
    assert request.get_header("Authorization") == "Bearer sk-test-1" and t.timeouts == [12.5]
    keyless = Transport(OK)
    keyless.client().complete([MESSAGES])
    assert keyless.requests[0].get_header("Authorization") is None


def test_transient_failures_are_retried_with_exponential_backoff_and_retry_after():
    t = Transport(http_error(429, retry_after="7"), http_error(503), urllib.error.URLError(ConnectionRefusedError(111)),
                  TimeoutError("timed out"), OK)
    [reply] = t.client(max_retries=4, backoff=0.5).complete([MESSAGES])
    assert reply.text == "The final answer is 4" and len(t.requests) == 5
    assert t.sleeps == [7.0, 1.0, 2.0, 4.0]  # Retry-After when longer, else 0.5 x 2^attempt
    capped = Transport(http_error(429, retry_after="100000"), OK)
    capped.client().complete([MESSAGES])
    assert capped.sleeps == [MAX_DELAY]


def test_retries_are_bounded_and_the_error_names_the_endpoint():
    t = Transport(*[http_error(502)] * 2 + [TimeoutError()] * 2)
    with pytest.raises(AnnotatorUnavailable) as info:
        t.client(max_retries=3).complete([MESSAGES])
    assert len(t.requests) == 4 and t.sleeps == [1.0, 2.0, 4.0]
    text = str(info.value)
    assert URL in text and "qwen-72b" in text and "HTTP 502" in text and "TimeoutError" in text
    assert "star run --resume" in text


@pytest.mark.parametrize("code", [401, 403])
def test_a_refused_key_is_a_clear_error_at_once(code):
    t = Transport(http_error(code, '{"error": "invalid api key"}'))
    with pytest.raises(ConfigError) as info:
        t.client(api_key_env="MY_KEY", environ={"MY_KEY": "sk-very-secret"}).complete([MESSAGES])
    text = str(info.value)
    assert t.sleeps == [] and len(t.requests) == 1
    assert f"HTTP {code}" in text and URL in text and "qwen-72b" in text and "$MY_KEY" in text
    assert "invalid api key" in text and "sk-very-secret" not in text


def test_an_unknown_model_or_path_is_a_clear_error_at_once():
    t = Transport(http_error(404, "model 'qwen-72b' not found"))
    with pytest.raises(ConfigError) as info:
        t.client().complete([MESSAGES])
    text = str(info.value)
    assert t.sleeps == [] and "HTTP 404" in text and "llm_annotator.base_url" in text and "llm_annotator.model" in text
    assert "not found" in text
    with pytest.raises(ConfigError, match="HTTP 400"):
        Transport(http_error(400, "max_tokens too large")).client().complete([MESSAGES])


def test_a_missing_key_variable_and_a_foreign_format_are_named():
    with pytest.raises(ConfigError, match="the environment variable OPENAI_API_KEY is not set") as info:
        Transport().client(api_key_env="OPENAI_API_KEY", environ={})
    assert "never written" in str(info.value)
    with pytest.raises(ConfigError, match="not JSON"):
        Transport(b"<html>proxy login</html>").client().complete([MESSAGES])
    with pytest.raises(ConfigError, match="OpenAI chat-completions format"):
        Transport({"result": "4"}).client().complete([MESSAGES])
    [empty] = Transport({"choices": [{"message": {"content": None}}]}).client().complete([MESSAGES])
    assert (empty.text, empty.prompt_tokens) == ("", 0)  # no text, no usage: an empty reply, counted as 0 tokens
