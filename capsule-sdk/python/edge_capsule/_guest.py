"""The component's exports and its calls into the runner, over the generated bindings.

Imported only inside the component that ``edge-capsule-build`` makes (the
generated ``wit_world`` package exists only there). Owns the conversion
between the SDK's values and the WIT types of ``edge-runner:capsule@0.1.0``,
and the ``wasi:http`` transport. It decides nothing: the entry point is the
one ``_entry`` registered, and the runner grants or refuses every request.
"""

from __future__ import annotations

from typing import Optional

from componentize_py_types import Err
from wit_world.imports import edge_runner_capsule_types as wit
from wit_world.imports import host as wit_host
from wit_world.imports import outgoing_handler, streams
from wit_world.imports import wasi_http_types as wh

from . import http
from ._api import CapsuleError, Context, Kind, Outcome, Severity, Verdict
from ._entry import invoke, registered

_KINDS = {Kind.TEST: wit.Kind.TEST, Kind.REPRODUCE: wit.Kind.REPRODUCE, Kind.REMEDIATE: wit.Kind.REMEDIATE}
_VERDICTS = {Verdict.PASS: wit.Verdict.PASS, Verdict.FAIL: wit.Verdict.FAIL, Verdict.ERROR: wit.Verdict.ERROR}
_SEVERITIES = {
    Severity.INFO: wit.Severity.INFO,
    Severity.LOW: wit.Severity.LOW,
    Severity.MEDIUM: wit.Severity.MEDIUM,
    Severity.HIGH: wit.Severity.HIGH,
    Severity.CRITICAL: wit.Severity.CRITICAL,
}


class _Host:
    """The runner's ``host`` interface."""

    def config(self, key: str) -> Optional[str]:
        return wit_host.config(key)

    def emit_evidence(self, label: str, media_type: str, data: bytes) -> int:
        try:
            return wit_host.emit_evidence(label, media_type, data)
        except Err as e:
            raise CapsuleError(str(e.value)) from None


def _entry():
    entry = registered()
    if entry is None:
        # edge-capsule-build refuses such a module; this guards a hand-made build.
        raise CapsuleError("the capsule module marks no entry point (@capsule.test, .reproduce or .remediate)")
    return entry


def _to_wit(outcome: Outcome) -> wit.Outcome:
    return wit.Outcome(
        verdict=_VERDICTS[outcome.verdict],
        summary=outcome.summary,
        findings=[wit.Finding(code=f.code, severity=_SEVERITIES[f.severity], message=f.message) for f in outcome.findings],
    )


def _run(input: bytes) -> Outcome:
    entry = _entry()
    return invoke(entry, Context(entry.kind, input, _Host()))


class WitWorld:
    """The exports of the ``capsule`` world: ``kind`` and ``run``."""

    def kind(self) -> wit.Kind:
        return _KINDS[_entry().kind]

    def run(self, input: bytes) -> wit.Outcome:
        return _to_wit(_run(input))


def _method(name: str) -> wh.Method:
    known = {
        "GET": wh.Method_Get(),
        "POST": wh.Method_Post(),
        "PUT": wh.Method_Put(),
        "DELETE": wh.Method_Delete(),
        "HEAD": wh.Method_Head(),
        "PATCH": wh.Method_Patch(),
        "OPTIONS": wh.Method_Options(),
    }
    return known.get(name) or wh.Method_Other(name)


def _describe(request: http.Request, code: object) -> CapsuleError:
    if isinstance(code, wh.ErrorCode_HttpRequestDenied):
        return http.denied(request)
    if isinstance(code, wh.ErrorCode_ConnectionRefused):
        return CapsuleError(f"{request.method} {request.url}: connection refused")
    if isinstance(code, wh.ErrorCode_ConnectionTimeout):
        return CapsuleError(f"{request.method} {request.url}: connection timed out")
    return CapsuleError(f"{request.method} {request.url}: {type(code).__name__.removeprefix('ErrorCode_')}")


def _send(request: http.Request) -> http.Response:
    parts = http.urlsplit(request.url)
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    fail = lambda what: CapsuleError(f"{request.method} {request.url}: {what}")  # noqa: E731
    try:
        fields = wh.Fields.from_list([(n.lower(), v.encode("utf-8")) for n, v in request.headers])
    except Err as e:
        raise fail(f"bad header: {type(e.value).__name__.removeprefix('HeaderError_')}") from None
    outgoing = wh.OutgoingRequest(fields)
    try:
        outgoing.set_method(_method(request.method))
        outgoing.set_scheme(wh.Scheme_Https() if parts.scheme == "https" else wh.Scheme_Http())
        outgoing.set_authority(parts.netloc)
        outgoing.set_path_with_query(path)
    except Err:
        raise fail("bad method, scheme, authority or path") from None
    body = outgoing.body()
    # The body's stream is a child of the body: it must be dropped before the body is finished.
    with body.write() as stream:
        for i in range(0, len(request.body), 4096):
            try:
                stream.blocking_write_and_flush(request.body[i : i + 4096])
            except Err as e:
                raise fail(f"writing the body: {type(e.value).__name__}") from None
    options = None
    if request.timeout_s is not None:
        options = wh.RequestOptions()
        ns = int(request.timeout_s * 1e9)
        options.set_connect_timeout(ns)
        options.set_first_byte_timeout(ns)
    try:
        pending = outgoing_handler.handle(outgoing, options)
    except Err as e:
        raise _describe(request, e.value) from None
    try:
        wh.OutgoingBody.finish(body, None)
    except Err as e:
        raise _describe(request, e.value) from None
    pending.subscribe().block()
    got = pending.get()
    if got is None:
        raise fail("no response")
    if isinstance(got, Err):
        raise fail("response already taken")
    inner = got.value
    if isinstance(inner, Err):
        raise _describe(request, inner.value)
    response = inner.value
    status = response.status()
    headers = [(n, bytes(v)) for n, v in response.headers().entries()]
    incoming = response.consume()
    reader = incoming.stream()
    data = bytearray()
    while True:
        try:
            chunk = reader.blocking_read(64 * 1024)
        except Err as e:
            if isinstance(e.value, streams.StreamError_Closed):
                break
            raise fail("reading the body failed") from None
        data.extend(chunk)
        if len(data) > http.MAX_BODY_BYTES:
            raise fail(f"body is over {http.MAX_BODY_BYTES} bytes")
    return http.Response(status=status, headers=headers, body=bytes(data))


http._transport = _send
