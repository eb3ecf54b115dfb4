"""Write Edge Runner capsules in Python: one function, one decorator.

A capsule is a WebAssembly component that the Edge Runner verifies against a
trust root and runs in a sandbox that grants nothing by default. This package
hides the component bindings: an author writes one function taking a
:class:`Context`, marks it with the decorator for its kind, and builds it with
``edge-capsule-build`` (which checks the module, then calls componentize-py)::

    import edge_capsule as capsule

    @capsule.test
    def greeting_is_polite(cx: capsule.Context) -> capsule.Outcome:
        text = cx.input_text()
        cx.evidence("input", "text/plain", text.encode())
        if "please" in text:
            return capsule.Outcome.passed("greeting is polite")
        return capsule.Outcome.failed("greeting lacks `please`")

The contract is ``capsule-sdk/wit/capsule.wit`` (a copy ships in ``wit/``);
this package never grants itself anything: every capability comes from the
runner, as the signed manifest (``capsule.toml``) asks and the site allows.
"""

from __future__ import annotations

from ._api import (
    PROPOSAL_MEDIA_TYPE,
    CapsuleDefinitionError,
    CapsuleError,
    Context,
    Finding,
    HttpProposal,
    HttpRequest,
    Kind,
    Outcome,
    Proposal,
    Severity,
    Verdict,
)
from ._entry import remediate, reproduce, test
from . import http

__all__ = [
    "PROPOSAL_MEDIA_TYPE",
    "CapsuleDefinitionError",
    "CapsuleError",
    "Context",
    "Finding",
    "HttpProposal",
    "HttpRequest",
    "Kind",
    "Outcome",
    "Proposal",
    "Severity",
    "Verdict",
    "http",
    "remediate",
    "reproduce",
    "test",
]

#: The version of this SDK; it speaks ``edge-runner:capsule@0.1.0``.
__version__ = "0.1.0"

#: The WIT package this SDK implements (see ``capsule-sdk/wit/capsule.wit``).
WIT_PACKAGE = "edge-runner:capsule@0.1.0"
