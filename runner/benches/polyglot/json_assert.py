"""The json-assert capsule's check in Python, for benches/polyglot.rs (same input, same verdicts)."""

import json

import edge_capsule as capsule
from edge_capsule import CapsuleError, Outcome, Severity


def pointer(document, path):
    """Resolves an RFC 6901 JSON Pointer; a missing member gives ``KeyError``."""
    if path == "":
        return document
    here = document
    for raw in path[1:].split("/"):
        token = raw.replace("~1", "/").replace("~0", "~")
        if isinstance(here, list) and token.isdigit() and (token == "0" or not token.startswith("0")) and int(token) < len(here):
            here = here[int(token)]
        elif isinstance(here, dict) and token in here:
            here = here[token]
        else:
            raise KeyError(path)
    return here


@capsule.test
def check_document(cx: capsule.Context) -> Outcome:
    spec = cx.input_json()
    document = spec["document"]
    cx.evidence("document", "application/json", json.dumps(document, separators=(",", ":")))
    outcome = Outcome.passed(f"all {len(spec['assertions'])} assertions hold")
    failed = []
    for index, assertion in enumerate(spec["assertions"]):
        path = assertion["pointer"]
        try:
            found, present = pointer(document, path), True
        except KeyError:
            found, present = None, False
        if "equals" in assertion:
            if not present:
                failed.append((index, f"`{path}` is missing"))
            elif found != assertion["equals"]:
                failed.append((index, f"`{path}` is {found!r}, expected {assertion['equals']!r}"))
        elif "exists" in assertion:
            if assertion["exists"] != present:
                failed.append((index, f"`{path}` is {'present' if present else 'missing'}"))
        else:
            raise CapsuleError(f"assertion {index} on `{path}` needs `equals` or `exists`")
    if failed:
        outcome = Outcome.failed(f"{len(failed)} of {len(spec['assertions'])} assertions failed")
        for index, message in failed:
            outcome.with_finding(f"assertion.{index}", Severity.HIGH, message)
    return outcome

