"""Outgoing HTTP for capsules, through ``wasi:http``.

A request reaches only destinations the runner granted: the capsule's signed
manifest must list it under ``[capabilities] egress`` (for example
``"https://status.example.com:443"``) and the site policy must allow it. A
request to any other destination raises :class:`~edge_capsule.CapsuleError`
saying it was denied and which manifest entry would grant it::

    response = capsule.http.get("https://status.example.com/health").header("accept", "application/json").send()
    assert response.status == 200

Inside the runner the request goes through ``wasi:http``; in native unit tests
it goes to the transport given to :func:`edge_capsule.testing.run`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Callable, Optional
from urllib.parse import urlsplit

from ._api import CapsuleError

#: Largest response body read; more is an error, not silently cut (as the Rust SDK).
MAX_BODY_BYTES = 16 << 20

_METHODS = ("GET", "POST", "PUT", "DELETE", "HEAD", "PATCH", "OPTIONS")


@dataclass
class Response:
    """A response, read whole."""

    status: int
    """The status code, e.g. 200."""
    headers: list[tuple[str, bytes]] = field(default_factory=list)
    """Headers in the order received; names are lowercase."""
    body: bytes = b""
    """The body."""

    def header(self, name: str) -> Optional[str]:
        """The first value of header ``name`` (case-insensitive) as text, if present and UTF-8."""
        name = name.lower()
        for n, v in self.headers:
            if n == name:
                try:
                    return v.decode("utf-8")
                except UnicodeDecodeError:
                    return None
        return None

    def text(self) -> str:
        """The body as UTF-8 text (undecodable bytes replaced)."""
        return self.body.decode("utf-8", errors="replace")

    def json(self) -> Any:
        """The body parsed as JSON."""
        try:
            return json.loads(self.body)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise CapsuleError(f"response body is not the expected JSON: {e}") from None


@dataclass
class Request:
    """An HTTP request being built; create one with :func:`get`, :func:`post` or ``Request(method, url)``."""

    method: str
    url: str
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""
    timeout_s: Optional[float] = None

    def __post_init__(self) -> None:
        self.method = self.method.upper()

    def header(self, name: str, value: str) -> "Request":
        """Adds a header."""
        self.headers.append((name, value))
        return self

    def with_body(self, body: bytes | str) -> "Request":
        """Sets the body."""
        self.body = body.encode("utf-8") if isinstance(body, str) else bytes(body)
        return self

    def timeout(self, seconds: float) -> "Request":
        """Bounds connecting and waiting for the first byte (the run's own deadline always applies)."""
        self.timeout_s = seconds
        return self

    def send(self) -> Response:
        """Sends the request and reads the whole response."""
        parts = urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise CapsuleError(
                f"{self.method} {self.url}: not an absolute http:// or https:// URL (http://host[:port]/path)"
            )
        transport = _transport
        if transport is None:
            raise CapsuleError(
                f"{self.method} {self.url}: outgoing HTTP works only inside the runner; "
                "in a unit test pass `http_handler=` to edge_capsule.testing.run"
            )
        return transport(self)

    def egress_entry(self) -> str:
        """The ``[capabilities] egress`` entry that grants this request's destination, e.g. ``https://host:443``."""
        parts = urlsplit(self.url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
        return f"{parts.scheme}://{parts.hostname}:{port}"


def get(url: str) -> Request:
    """A GET request for ``url``."""
    return Request("GET", url)


def post(url: str) -> Request:
    """A POST request for ``url``."""
    return Request("POST", url)


def denied(request: Request) -> CapsuleError:
    """The error for a request the runner refused: it names the manifest entry that would grant it."""
    return CapsuleError(
        f"{request.method} {request.url}: request denied: the destination is not granted "
        f'(list it under [capabilities] egress in capsule.toml, e.g. egress = ["{request.egress_entry()}"], '
        "and the site must allow it)"
    )


#: How requests are sent: ``wasi:http`` inside the runner (set by ``_guest``), a fake in unit tests.
_transport: Optional[Callable[[Request], Response]] = None
