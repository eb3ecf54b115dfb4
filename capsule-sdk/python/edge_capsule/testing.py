"""Run a capsule's entry point natively, in a unit test (pytest), with a fake runner.

The fake grants exactly the ``config`` it is given, records evidence in a list,
and sends HTTP requests to the ``http`` function it is given (none: every
request is denied, as the runner denies an ungranted destination)::

    from edge_capsule import testing, Verdict
    import my_capsule

    def test_passes_when_up():
        run = testing.run(my_capsule.check, input={"status": "up"})
        assert run.outcome.verdict is Verdict.PASS
        assert run.evidence[0].label == "input"
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from . import http
from ._api import CapsuleError, Context, Outcome
from ._entry import Entry, invoke


@dataclass(frozen=True)
class EvidenceItem:
    """One item the capsule appended to the (fake) evidence record."""

    label: str
    media_type: str
    data: bytes

    def json(self) -> Any:
        """The item's data parsed as JSON."""
        return json.loads(self.data)


@dataclass
class Run:
    """What a native run produced."""

    outcome: Outcome
    evidence: list[EvidenceItem] = field(default_factory=list)
    requests: list[http.Request] = field(default_factory=list)


class _FakeHost:
    def __init__(self, config: dict[str, str], evidence: list[EvidenceItem], max_items: int) -> None:
        self._config = dict(config)
        self._evidence = evidence
        self._max_items = max_items

    def config(self, key: str) -> Optional[str]:
        return self._config.get(key)

    def emit_evidence(self, label: str, media_type: str, data: bytes) -> int:
        if len(self._evidence) >= self._max_items:
            raise CapsuleError(f"the run's evidence quota of {self._max_items} items is spent")
        self._evidence.append(EvidenceItem(label, media_type, bytes(data)))
        return len(self._evidence) - 1


def run(
    function: Callable[..., Any],
    input: bytes | str | dict[str, Any] | list[Any] = b"",
    config: Optional[dict[str, str]] = None,
    http_handler: Optional[Callable[[http.Request], http.Response]] = None,
    max_evidence_items: int = 64,
) -> Run:
    """Runs the entry point ``function`` (decorated with ``@capsule.test`` etc.) on ``input``.

    ``input`` may be bytes, text, or a dict/list (encoded as JSON). ``http_handler``
    answers the capsule's HTTP requests; without one, every request is denied.
    """
    entry = getattr(function, "__edge_capsule_entry__", None)
    if not isinstance(entry, Entry):
        raise TypeError(
            f"{getattr(function, '__name__', function)!r} is not a capsule entry point; "
            "pass the function decorated with @capsule.test, @capsule.reproduce or @capsule.remediate"
        )
    if isinstance(input, (dict, list)):
        data = json.dumps(input).encode("utf-8")
    elif isinstance(input, str):
        data = input.encode("utf-8")
    else:
        data = bytes(input)
    result = Run(outcome=Outcome.error("not run"))

    def transport(request: http.Request) -> http.Response:
        result.requests.append(request)
        if http_handler is None:
            raise http.denied(request)
        return http_handler(request)

    previous = http._transport
    http._transport = transport
    try:
        cx = Context(entry.kind, data, _FakeHost(config or {}, result.evidence, max_evidence_items))
        result.outcome = invoke(entry, cx)
    finally:
        http._transport = previous
    return result
