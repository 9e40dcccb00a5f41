"""One HTTP exchange on a keep-alive connection, retried as the browser's outbox retries
(connection errors, 408, 429, 5xx, with backoff): shared by the load benchmark's drivers
of Assay and of psiTurk, so that both are driven alike.

The connection is a bare HTTP/1.1 client on a socket, not http.client: http.client parses
every response's headers with the email package, about 240 µs of CPU per request against
75 µs here (measured against granian on this machine), and on 2 cores the load generator's
CPU is taken from the server it measures.
"""

from __future__ import annotations

import socket
import time


class Connection:
    """A keep-alive HTTP/1.1 connection, reopened on the next request once closed. It reads
    answers framed by Content-Length, chunked encoding or the end of the connection."""

    def __init__(self, host: str, port: int, timeout: float = 60) -> None:
        self.address, self.timeout = (host, port), timeout
        self.host = f"{host}:{port}".encode()
        self.sock: socket.socket | None = None
        self.buffer = b""

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
        self.sock, self.buffer = None, b""

    def exchange(self, method: str, path: str, body: bytes | None,
                 headers: dict[str, str]) -> tuple[int, bytes]:
        """Send one request and read its answer: (status, body)."""
        if self.sock is None:
            self.sock = socket.create_connection(self.address, self.timeout)
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        lines = [f"{method} {path} HTTP/1.1".encode(), b"Host: " + self.host]
        lines += [f"{name}: {value}".encode("latin-1") for name, value in headers.items()]
        if body is not None:
            lines.append(b"Content-Length: %d" % len(body))
        self.sock.sendall(b"\r\n".join(lines) + b"\r\n\r\n" + (body or b""))
        head = self._until(b"\r\n\r\n")
        status_line, *fields = head.split(b"\r\n")
        status = int(status_line.split(b" ", 2)[1])
        found = {}
        for field in fields:
            name, _, value = field.partition(b":")
            found[name.strip().lower()] = value.strip().lower()
        if b"chunked" in found.get(b"transfer-encoding", b""):
            answer = self._chunked()
        elif b"content-length" not in found and found.get(b"connection") == b"close":
            answer = self._to_end()
        else:
            answer = self._exactly(int(found.get(b"content-length", b"0")))
        if found.get(b"connection") == b"close":
            self.close()
        return status, answer

    def _recv(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("the server closed the connection")
        self.buffer += chunk

    def _until(self, marker: bytes) -> bytes:
        while (end := self.buffer.find(marker)) < 0:
            self._recv()
        found, self.buffer = self.buffer[:end], self.buffer[end + len(marker):]
        return found

    def _exactly(self, n: int) -> bytes:
        while len(self.buffer) < n:
            self._recv()
        found, self.buffer = self.buffer[:n], self.buffer[n:]
        return found

    def _to_end(self) -> bytes:
        while chunk := self.sock.recv(65536):
            self.buffer += chunk
        found, self.buffer = self.buffer, b""
        return found

    def _chunked(self) -> bytes:
        parts = []
        while size := int(self._until(b"\r\n").split(b";")[0], 16):
            parts.append(self._exactly(size))
            self._until(b"\r\n")
        self._until(b"\r\n")  # the end of the (empty) trailer
        return b"".join(parts)


def request(conn: Connection, method: str, path: str, body: str | None,
            headers: dict[str, str], tries: int = 50) -> tuple[int, bytes]:
    """(status, body) of the first answer worth keeping; RuntimeError after ``tries``."""
    payload = None if body is None else body.encode()
    for attempt in range(tries):
        try:
            status, data = conn.exchange(method, path, payload, headers)
        except (OSError, ValueError, IndexError):  # refused, reset, timed out, garbled
            conn.close()
            # a keep-alive connection the server closed while idle: reopen it at once, as
            # browsers do; a server that keeps failing gets backoff
            if attempt:
                time.sleep(min(0.05 * 2 ** attempt, 2))
            continue
        if status >= 500 or status in (408, 429):
            time.sleep(min(0.05 * 2 ** attempt, 2))
            continue
        return status, data
    raise RuntimeError(f"{method} {path}: no answer after {tries} tries")
