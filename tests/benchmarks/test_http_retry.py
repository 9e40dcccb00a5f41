"""The load benchmark's bare HTTP client (benchmarks/http_retry.py), against a scripted server:
it must frame answers as a browser does, keep its connection alive, reopen one the server
closed, and retry as the outbox does; a wrong answer here would be counted as the server's."""

from __future__ import annotations

import socket
import threading

from benchmarks.http_retry import Connection, request


def scripted(answers: list[list[bytes]]) -> tuple[int, list, threading.Thread]:
    """A server on a free port: its n-th connection reads one request per answer in
    ``answers[n]``, sends it, then closes. Returns (port, [(connection, request)], thread)."""
    listener = socket.create_server(("127.0.0.1", 0))
    seen: list[tuple[int, bytes]] = []

    def serve() -> None:
        with listener:
            for n, script in enumerate(answers):
                conn, _ = listener.accept()
                with conn:
                    for answer in script:
                        data = b""
                        while b"\r\n\r\n" not in data:
                            data += conn.recv(65536)
                        head, _, body = data.partition(b"\r\n\r\n")
                        length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                                       if line.lower().startswith(b"content-length:")), 0)
                        while len(body) < length:
                            body += conn.recv(65536)
                        seen.append((n, head + b"\r\n\r\n" + body))
                        conn.sendall(answer)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return listener.getsockname()[1], seen, thread


def ok(body: bytes, extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n%s\r\n%s" % (len(body), extra, body)


def test_answers_are_framed_and_the_connection_kept_alive():
    chunked = (b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n"
               b"4\r\nabcd\r\n3;ext=1\r\nefg\r\n0\r\n\r\n")
    port, seen, thread = scripted([[ok(b'{"a": 1}'), chunked, ok(b"")]])
    conn = Connection("127.0.0.1", port)
    assert request(conn, "POST", "/api/trials", '{"x": "é"}', {"X-T": "t"}) == (200, b'{"a": 1}')
    assert request(conn, "GET", "/s/x", None, {}) == (201, b"abcdefg")
    assert request(conn, "GET", "/healthz", None, {}) == (200, b"")
    conn.close()
    thread.join(timeout=10)
    assert [n for n, _ in seen] == [0, 0, 0]  # one connection for all three
    first = seen[0][1]
    assert first.startswith(b"POST /api/trials HTTP/1.1\r\n") and b"X-T: t\r\n" in first
    assert first.endswith(b'\r\n\r\n{"x": "\xc3\xa9"}') and b"Content-Length: 11\r\n" in first


def test_a_closed_connection_is_reopened_and_failures_are_retried():
    closing = b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nto the end"
    unavailable = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n"
    port, seen, thread = scripted([[closing], [ok(b"kept")], [unavailable, ok(b"again")]])
    conn = Connection("127.0.0.1", port)
    assert request(conn, "GET", "/a", None, {}) == (200, b"to the end")
    assert request(conn, "GET", "/b", None, {}) == (200, b"kept")
    # the server closes this connection idle: the request goes out again on a new one
    assert request(conn, "POST", "/c", "{}", {}) == (200, b"again")
    conn.close()
    thread.join(timeout=10)
    assert [(n, r.split(b" ")[1]) for n, r in seen] == [(0, b"/a"), (1, b"/b"), (2, b"/c"),
                                                          (2, b"/c")]
