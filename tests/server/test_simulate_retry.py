"""``assay simulate`` retries an answer cut off mid-body, as a browser's failed fetch is
retried: behind a proxy, an instance killed while sending a response leaves its client with
the headers and part of the body."""

from __future__ import annotations

import socket
import threading

import requests

from server.simulate import send

BODY = b'{"ok": true}'


def test_an_answer_cut_off_mid_body_is_retried():
    listener = socket.create_server(("127.0.0.1", 0))
    port, served = listener.getsockname()[1], []

    def serve() -> None:
        for attempt in range(2):
            conn, _ = listener.accept()
            with conn:
                conn.recv(65536)
                served.append(attempt)
                head = f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n" \
                       f"Content-Length: {len(BODY) if attempt else 6477}\r\n\r\n".encode()
                conn.sendall(head + (BODY if attempt else BODY[:5]))  # then the first dies

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    with requests.Session() as http:
        response = send(http, "GET", f"http://127.0.0.1:{port}/img/p/x.png", patience_s=10)
    thread.join(timeout=10)
    listener.close()
    assert served == [0, 1] and response.status_code == 200 and response.json() == {"ok": True}
