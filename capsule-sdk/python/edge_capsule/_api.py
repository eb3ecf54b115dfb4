"""The types a capsule author uses: kinds, outcomes, findings, the context, proposals.

Owns only plain Python values; it never touches the generated bindings, so it
imports and tests natively. ``_guest`` converts these values for the runner.
"""

from __future__ import annotations

import enum
import json
from dataclasses import asdict, dataclass, field
from typing import Any, Optional, Protocol


class CapsuleError(Exception):
    """Why a capsule could not do its work; an entry point that raises it gets an ``error`` verdict."""


class CapsuleDefinitionError(Exception):
    """The capsule module is written wrongly (two entry points, a wrong signature, ...).

    Raised while the module is imported, so ``edge-capsule-build`` refuses to
    build it; the message names the author's file and line.
    """


class Kind(enum.Enum):
    """What a capsule is for. It must match ``kind`` in the signed manifest."""

    TEST = "test"
    """Checks a system; reads only."""
    REPRODUCE = "reproduce"
    """Replays a failure deterministically."""
    REMEDIATE = "remediate"
    """Prepares a fix as a proposal; never applies it."""


class Verdict(enum.Enum):
    """The capsule's overall judgement."""

    PASS = "pass"
    """Every check held."""
    FAIL = "fail"
    """At least one check did not hold."""
    ERROR = "error"
    """The capsule could not decide."""


class Severity(enum.IntEnum):
    """How much a finding matters (ordered: ``Severity.CRITICAL > Severity.HIGH``)."""

    INFO = 0
    LOW = 1
    MEDIUM = 2
    HIGH = 3
    CRITICAL = 4


@dataclass(frozen=True)
class Finding:
    """One observation a capsule reports."""

    code: str
    """Stable, machine-readable identifier, e.g. ``http.status``."""
    severity: Severity
    """How much it matters."""
    message: str
    """Human-readable explanation."""

    def __post_init__(self) -> None:
        if not isinstance(self.severity, Severity):
            raise TypeError(
                f"Finding severity must be an edge_capsule.Severity, not {self.severity!r}"
            )


@dataclass
class Outcome:
    """What a run produced: a verdict, a one-line summary and findings."""

    verdict: Verdict
    summary: str
    findings: list[Finding] = field(default_factory=list)

    @classmethod
    def passed(cls, summary: str) -> "Outcome":
        """Every check held."""
        return cls(Verdict.PASS, summary)

    @classmethod
    def failed(cls, summary: str) -> "Outcome":
        """At least one check did not hold."""
        return cls(Verdict.FAIL, summary)

    @classmethod
    def error(cls, summary: str) -> "Outcome":
        """The capsule could not decide."""
        return cls(Verdict.ERROR, summary)

    def with_finding(self, code: str, severity: Severity, message: str) -> "Outcome":
        """Adds a finding and returns this outcome."""
        self.findings.append(Finding(code, severity, message))
        return self


#: Media type of a proposal in the evidence record (as the Rust SDK's ``PROPOSAL_MEDIA_TYPE``).
PROPOSAL_MEDIA_TYPE = "application/vnd.edge-runner.proposal+json"


@dataclass(frozen=True)
class Proposal:
    """A file change a ``remediate`` capsule proposes; recorded for approval, never applied by the capsule."""

    target: str
    """What the change applies to, e.g. a file path as the capsule sees it."""
    diff: str
    """The change as a unified diff."""
    rollback: str
    """The unified diff that undoes it."""
    rationale: str
    """Why, for the approvers."""


@dataclass(frozen=True)
class HttpRequest:
    """An exact HTTP request a ``remediate`` capsule proposes (the runner sends it only after approval)."""

    method: str
    url: str
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "method", self.method.upper())


@dataclass(frozen=True)
class HttpProposal:
    """An HTTP change a ``remediate`` capsule proposes, and the request that undoes it (``None``: irreversible)."""

    http: HttpRequest
    http_rollback: Optional[HttpRequest]
    rationale: str


class Host(Protocol):
    """The runner's ``host`` interface, as the context calls it."""

    def config(self, key: str) -> Optional[str]: ...

    def emit_evidence(self, label: str, media_type: str, data: bytes) -> int: ...


class Context:
    """What the runner hands a capsule: its input, granted configuration and the run's evidence record."""

    def __init__(self, kind: Kind, input: bytes, host: Host) -> None:
        self._kind = kind
        self._input = bytes(input)
        self._host = host

    @property
    def kind(self) -> Kind:
        """The kind this capsule was built as."""
        return self._kind

    @property
    def input(self) -> bytes:
        """The raw input bytes the operator supplied (empty when none)."""
        return self._input

    def input_text(self) -> str:
        """The input as UTF-8 text."""
        try:
            return self._input.decode("utf-8")
        except UnicodeDecodeError as e:
            raise CapsuleError(f"input is not UTF-8 text: {e}") from None

    def input_json(self) -> Any:
        """The input parsed as JSON."""
        try:
            return json.loads(self._input)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise CapsuleError(f"input is not the expected JSON: {e}") from None

    def config(self, key: str) -> Optional[str]:
        """The value of a configuration key the runner granted, or ``None``."""
        return self._host.config(key)

    def evidence(self, label: str, media_type: str, data: bytes | str) -> int:
        """Appends an item to this run's evidence record and returns its index.

        Raises :class:`CapsuleError` when the run's evidence quota is spent.
        """
        if isinstance(data, str):
            data = data.encode("utf-8")
        try:
            return self._host.emit_evidence(label, media_type, bytes(data))
        except CapsuleError as e:
            raise CapsuleError(f"evidence `{label}` was not recorded: {e}") from None

    def propose(self, proposal: Proposal | HttpProposal) -> int:
        """Records a proposal in this run's evidence for approval; returns its evidence index.

        Only a ``remediate`` capsule may propose; from any other kind this raises.
        """
        if self._kind is not Kind.REMEDIATE:
            raise CapsuleError(
                "only a `remediate` capsule may propose changes; decorate the function with @capsule.remediate"
            )
        if isinstance(proposal, Proposal):
            body = asdict(proposal)
        elif isinstance(proposal, HttpProposal):
            body = {
                "http": _request_json(proposal.http),
                "http_rollback": None
                if proposal.http_rollback is None
                else _request_json(proposal.http_rollback),
                "rationale": proposal.rationale,
            }
        else:
            raise TypeError(
                f"propose() takes an edge_capsule.Proposal or HttpProposal, not {type(proposal).__name__}"
            )
        return self.evidence(
            "proposal", PROPOSAL_MEDIA_TYPE, json.dumps(body, separators=(",", ":"))
        )


def _request_json(r: HttpRequest) -> dict[str, Any]:
    # The Rust SDK's serde encoding: headers as [name, value] pairs.
    return {
        "method": r.method,
        "url": r.url,
        "headers": [[n, v] for n, v in r.headers],
        "body": r.body,
    }
