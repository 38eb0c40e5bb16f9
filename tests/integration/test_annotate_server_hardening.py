"""The annotation server off loopback: an access token, IPv6 loopback, idle timeouts, Host on port 80."""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import star.annotation.server as server_module
from star.annotation.server import AnnotationServer, host_matches, make_server
from star.errors import DataError, StarError


def _serve(server: AnnotationServer) -> threading.Thread:
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    return thread


@pytest.fixture
def open_to_all(tmp_path: Path, make_waiting_run) -> Iterator[tuple[AnnotationServer, list[str]]]:
    """Bound to every interface, so a token is required; the test talks to it over 127.0.0.1 only."""
    run_dir, ids = make_waiting_run(tmp_path)
    server = make_server(run_dir, host="0.0.0.0")
    _serve(server)
    yield server, ids
    server.shutdown()
    server.server_close()


def _get(port: int, path: str, headers: dict[str, str] | None = None, host: str = "127.0.0.1"
         ) -> tuple[int, bytes, http.client.HTTPMessage]:
    conn = http.client.HTTPConnection(host, port, timeout=10)
    try:
        conn.request("GET", path, headers=headers or {})
        res = conn.getresponse()
        return res.status, res.read(), res.headers
    finally:
        conn.close()


def test_off_loopback_every_request_needs_the_token(open_to_all) -> None:
    server, ids = open_to_all
    assert server.token and len(server.token) >= 24 and server.url.endswith(f"/?token={server.token}")
    for path in ("/", "/page.js", "/api/items", f"/api/items?token={server.token[:-1]}x"):
        status, body, _ = _get(server.port, path)
        assert status == 403 and b"access token" in body, path
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)  # a write without it
    conn.request("POST", "/api/label", json.dumps({"id": ids[0], "answer": "1"}), {"Content-Type": "application/json"})
    assert conn.getresponse().status == 403
    conn.close()


def test_the_token_in_the_url_becomes_a_same_site_cookie(open_to_all) -> None:
    server, ids = open_to_all
    status, _, headers = _get(server.port, f"/?token={server.token}")
    cookie = headers["Set-Cookie"]
    assert status == 200 and cookie.startswith(f"star_token={server.token};")
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
    status, body, _ = _get(server.port, "/api/items", {"Cookie": f"star_token={server.token}"})
    assert status == 200 and [i["id"] for i in json.loads(body)["items"]] == ids
    assert _get(server.port, "/api/items", {"Cookie": "star_token=wrong-token-value-xxxxxxxx"})[0] == 403


def test_loopback_needs_no_token_and_a_bad_token_is_refused(tmp_path: Path, make_waiting_run) -> None:
    run_dir, _ = make_waiting_run(tmp_path)
    server = make_server(run_dir)
    try:
        assert server.token is None and "token" not in server.url
    finally:
        server.server_close()
    with pytest.raises(DataError, match="token"):
        make_server(run_dir, token="short")


def test_ipv6_loopback_is_served(tmp_path: Path, make_waiting_run) -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6 on this machine")
    run_dir, ids = make_waiting_run(tmp_path)
    try:
        server = make_server(run_dir, host="::1")
    except StarError as e:
        pytest.skip(f"::1 cannot be bound here: {e.message}")
    _serve(server)
    try:
        assert server.url == f"http://[::1]:{server.port}/" and server.token is None
        status, body, _ = _get(server.port, "/api/items", host="::1")
        assert status == 200 and [i["id"] for i in json.loads(body)["items"]] == ids
    finally:
        server.shutdown()
        server.server_close()


def test_a_stalled_client_is_cut_off(tmp_path: Path, make_waiting_run, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(server_module._Handler, "timeout", 0.5)
    run_dir, _ = make_waiting_run(tmp_path)
    server = make_server(run_dir)
    _serve(server)
    try:
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
            s.sendall(b"POST /api/label HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nContent-Type: application/json\r\n"
                      b"Content-Length: 40\r\n\r\n{" % server.port)  # headers, then 1 of the 40 bytes, then silence
            start = time.monotonic()
            assert s.recv(4096) == b""  # the server closed the connection
            assert time.monotonic() - start < 8
    finally:
        server.shutdown()
        server.server_close()


def test_host_without_port_matches_only_on_port_80() -> None:
    assert host_matches("127.0.0.1", "127.0.0.1", 80) and host_matches("localhost", "127.0.0.1", 80)
    assert not host_matches("127.0.0.1", "127.0.0.1", 8000)
    assert host_matches("127.0.0.1:8000", "127.0.0.1", 8000) and not host_matches("127.0.0.1:80", "127.0.0.1", 8000)
    assert host_matches("[::1]:80", "::1", 80) and host_matches("[::1]", "::1", 80)
    assert not host_matches("evil.example", "127.0.0.1", 80)
    assert host_matches("anything.example", "0.0.0.0", 8000)  # all interfaces: the token guards instead


def test_a_bad_host_is_blamed_not_the_port(tmp_path: Path, make_waiting_run) -> None:
    run_dir, _ = make_waiting_run(tmp_path)
    with pytest.raises(StarError) as err:
        make_server(run_dir, host="192.0.2.1")  # TEST-NET-1: never an address of this machine
    assert "--host" in err.value.hint and "--port" not in err.value.hint
