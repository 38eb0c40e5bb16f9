"""The annotation server's HTTP surface: loopback only, fixed routes, checked answers, no traversal."""

from __future__ import annotations

import http.client
import inspect
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from star import cli
from star.annotation.server import AnnotationServer, make_server, split_host
from star.errors import RunStateError
from star.store.labels import LabelStore


@pytest.fixture
def make_run(make_waiting_run):
    return make_waiting_run


@pytest.fixture
def served(tmp_path: Path, make_run) -> Iterator[tuple[AnnotationServer, Path, list[str]]]:
    run_dir, ids = make_run(tmp_path)
    (tmp_path / "secret.txt").write_text("TOP-SECRET outside the run", encoding="utf-8")
    server = make_server(run_dir)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield server, run_dir, ids
    server.shutdown()
    server.server_close()


def request(server: AnnotationServer, method: str, path: str, body: bytes | None = None,
            headers: dict[str, str] | None = None) -> tuple[int, bytes, http.client.HTTPMessage]:
    """One raw request (the path is sent exactly as given)."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        res = conn.getresponse()
        return res.status, res.read(), res.headers
    finally:
        conn.close()


def post_label(server: AnnotationServer, data: object, **headers: str) -> tuple[int, dict]:
    body = json.dumps(data).encode()
    status, out, _ = request(server, "POST", "/api/label", body, {"Content-Type": "application/json", **headers})
    return status, json.loads(out)


def stored(run_dir: Path) -> list[tuple]:
    store = LabelStore(run_dir / "labels.sqlite")
    try:
        return [(x.example_id, x.answer, x.annotator, x.round) for x in store.all()]
    finally:
        store.close()


def test_binds_to_loopback_by_default(served) -> None:
    server, _, _ = served
    assert server.server_address[0] == "127.0.0.1"
    assert server.url == f"http://127.0.0.1:{server.port}/"
    assert inspect.signature(cli.annotate_command).parameters["host"].default.default == "127.0.0.1"


@pytest.mark.parametrize("path", [
    "/../../etc/passwd", "/%2e%2e/%2e%2e/etc/passwd", "/%2E%2E%2F%2E%2E%2Fetc%2Fpasswd", "/static/..%2f..%2fconfig.yaml",
    "/static/../../secret.txt", "/..%2f..%2fsecret.txt", "/api/items/../../config.yaml", "//etc/passwd",
    "/page.js/../config.yaml", "/config.yaml", "/labels.sqlite", "/round-0/query.jsonl", "/run/config.yaml",
    "/api/items%00", "/api/label", "/annotate_page.html", "/human.py", "../../etc/passwd", "/%252e%252e/secret.txt",
])
def test_path_traversal_never_reads_a_file(served, path: str) -> None:
    server, _, _ = served
    status, body, _ = request(server, "GET", path)
    assert status in (400, 404), (path, status)
    for leak in (b"root:", b"TOP-SECRET", b"output_dir", b"SQLite format", b"pool-0000", b"import "):
        assert leak not in body


@pytest.mark.parametrize("query", ["?file=../../etc/passwd", "?path=..%2f..%2fsecret.txt", "?annotator=../../x"])
def test_query_parameters_are_never_paths(served, query: str) -> None:
    server, _, _ = served
    for route in ("/", "/api/items", "/page.js"):
        status, body, _ = request(server, "GET", route + query)
        assert status == 200 and b"root:" not in body and b"TOP-SECRET" not in body


def test_items_and_a_committed_label(served) -> None:
    server, run_dir, ids = served
    status, body, headers = request(server, "GET", "/api/items")
    data = json.loads(body)
    assert status == 200 and headers["Content-Type"].startswith("application/json")
    assert [i["id"] for i in data["items"]] == ids and data["labelled"] == 0 and data["round"] == 0
    status, reply = post_label(server, {"id": ids[0], "answer": "12"})
    assert status == 200 and reply["remaining"] == 3
    assert stored(run_dir) == [(ids[0], "12", "human:web", 0)]  # committed before the reply
    assert json.loads(request(server, "GET", "/api/items")[1])["items"][0]["answer"] == "12"
    status, reply = post_label(server, {"id": ids[0], "answer": "13"})
    assert status == 409 and "never overwritten" in reply["hint"]
    assert stored(run_dir) == [(ids[0], "12", "human:web", 0)]


def test_markup_is_stored_verbatim_and_served_as_json(served) -> None:
    server, run_dir, ids = served
    answer = '<script>alert("x")</script><img src=x onerror=alert(1)> 7'
    assert post_label(server, {"id": ids[1], "answer": answer, "annotator": "bob"})[0] == 200
    assert stored(run_dir) == [(ids[1], answer, "human:bob", 0)]
    _, body, headers = request(server, "GET", "/api/items")
    assert headers["X-Content-Type-Options"] == "nosniff" and json.loads(body)["items"][1]["answer"] == answer


@pytest.mark.parametrize(("data", "status", "needle"), [
    ({"id": "../../etc/passwd", "answer": "1"}, 400, "unknown id"),
    ({"id": "pool-000011", "answer": "1"}, 400, "unknown id"),
    ({"answer": "1"}, 400, "unknown id"),
    ({"id": "@0", "answer": ""}, 400, "answer is empty"),
    ({"id": "@0", "answer": "no digits"}, 400, "not a valid arithmetic answer"),
    ({"id": "@0", "answer": 5}, 400, "answer must be text"),
    ({"id": "@0", "answer": "1", "annotator": "../x"}, 400, "annotator"),
    (["@0", "1"], 400, "JSON object"),
])
def test_bad_answers_are_refused(served, data, status: int, needle: str) -> None:
    server, run_dir, ids = served
    if isinstance(data, dict):
        data = {k: ids[0] if v == "@0" else v for k, v in data.items()}
    got, reply = post_label(server, data)
    assert got == status and needle in reply["error"], reply
    assert stored(run_dir) == []


def test_cross_site_and_malformed_requests_are_refused(served) -> None:
    server, run_dir, ids = served
    good = json.dumps({"id": ids[0], "answer": "1"}).encode()
    assert request(server, "POST", "/api/label", good, {"Content-Type": "text/plain"})[0] == 415
    assert request(server, "POST", "/api/label", good, {"Content-Type": "application/json",
                                                           "Origin": "http://evil.example"})[0] == 403
    assert request(server, "GET", "/api/items", headers={"Host": "evil.example"})[0] == 421
    assert request(server, "GET", "/api/items", headers={"Host": f"attacker.test:{server.port}"})[0] == 421
    assert request(server, "POST", "/api/label", b"{not json", {"Content-Type": "application/json"})[0] == 400
    assert request(server, "POST", "/elsewhere", good, {"Content-Type": "application/json"})[0] == 404
    assert request(server, "DELETE", "/api/label")[0] == 501
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:  # no Content-Length
        s.sendall(b"POST /api/label HTTP/1.0\r\nHost: 127.0.0.1:%d\r\nContent-Type: application/json\r\n\r\n" % server.port)
        assert b" 411 " in s.recv(4096)
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:  # huge body announced
        s.sendall(b"POST /api/label HTTP/1.0\r\nHost: 127.0.0.1:%d\r\nContent-Type: application/json\r\n"
                  b"Content-Length: 999999999\r\n\r\n" % server.port)
        assert b" 413 " in s.recv(4096)
    assert stored(run_dir) == []


def test_page_is_text_only_and_locked_down(served) -> None:
    server, _, _ = served
    status, html, headers = request(server, "GET", "/")
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    assert "script-src 'self'" in headers["Content-Security-Policy"] and headers["X-Frame-Options"] == "DENY"
    assert b'<script src="/page.js"></script>' in html and html.count(b"<script") == 1
    js = request(server, "GET", "/page.js")[1].decode()
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function"):
        assert sink not in js


def test_host_header_parsing() -> None:
    assert split_host("127.0.0.1:80") == ("127.0.0.1", "80")
    assert split_host("[::1]:8080") == ("::1", "8080")
    assert split_host("localhost") == ("localhost", "")


def test_no_open_round_is_refused_at_start(tmp_path: Path, make_run) -> None:
    run_dir, _ = make_run(tmp_path)
    (run_dir / "round-0" / "query.jsonl").unlink()
    with pytest.raises(RunStateError, match="no query"):
        make_server(run_dir)


def test_star_annotate_command_prints_the_url_and_stops_cleanly(tmp_path: Path, make_run) -> None:
    run_dir, ids = make_run(tmp_path)
    # SIGINT as in a terminal: a shell's background job (e.g. `pytest &`) hands its children SIGINT ignored
    proc = subprocess.Popen([sys.executable, "-m", "star", "annotate", str(run_dir), "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"},
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        line = proc.stdout.readline()
        assert line.startswith("annotate round 0 of ") and "http://127.0.0.1:" in line, line + proc.stderr.read()
        url = line.split(" at ")[1].split()[0]
        with urllib.request.urlopen(url + "api/items", timeout=10) as res:
            assert [i["id"] for i in json.loads(res.read())["items"]] == ids
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0 and "stopped" in out and "Traceback" not in err
