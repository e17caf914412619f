"""The live page's server answers only requests addressed to it as 127.0.0.1:PORT or localhost:PORT
(issue 21): a DNS-rebinding page (another site's name pointed at 127.0.0.1) gets 403 and no scores."""

from __future__ import annotations

import socket

import pytest

from pivad.report.live import live_page_for


def _get(port: int, path: str, host: str | None) -> tuple[int, bytes]:
    """A raw HTTP/1.1 GET on loopback with exactly the ``Host`` header given (none if None)."""
    header = f"Host: {host}\r\n" if host is not None else ""
    request = f"GET {path} HTTP/1.1\r\n{header}Connection: close\r\n\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(request.encode("latin-1"))
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
    head, _, body = reply.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


@pytest.fixture
def live():
    page = live_page_for("cam", 25.0, 0.5, "--threshold", {"kind": "pivad"}, 200, 0)
    page.add(0, 0.123456)
    yield page
    page.close(grace=0)


@pytest.mark.parametrize("host", ["127.0.0.1:{port}", "localhost:{port}", "LOCALHOST:{port}"])
def test_loopback_names_are_served(live, host):
    port = live._server.server_address[1]
    status, body = _get(port, "/data.json", host.format(port=port))
    assert status == 200 and b"0.123456" in body


@pytest.mark.parametrize("host", ["evil.example:{port}", "evil.example", "127.0.0.1", "127.0.0.1:1",
                                  "localhost.evil.example:{port}", "", None])
@pytest.mark.parametrize("path", ["/", "/data.json"])
def test_other_hosts_get_403_without_data(live, host, path):
    port = live._server.server_address[1]
    status, body = _get(port, path, None if host is None else host.format(port=port))
    assert status == 403
    assert b"0.123456" not in body and b"pivad-data" not in body
    assert live.polls == 0
