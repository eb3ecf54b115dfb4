"""Test capsule: probes an HTTP service and checks what it answers (Python).

Input (JSON; every check optional):
``{"url": "https://status.example.com/health", "method": "GET",
  "expect_status": [200], "max_latency_ms": 500,
  "headers": {"content-type": "application/json"},
  "body_contains": ["\\"status\\":\\"up\\""]}``.
Without ``url`` the granted config key ``target-url`` is used. The verdict is
``pass`` when every check holds, ``fail`` with one finding per failed check,
``error`` when the service cannot be reached. The response (status, latency,
headers, first 4 KiB of the body) goes into the evidence record.
"""

import json
import time

import edge_capsule as capsule
from edge_capsule import CapsuleError, Outcome, Severity

_FIELDS = {"url", "method", "expect_status", "max_latency_ms", "headers", "body_contains"}


@capsule.test
def probe(cx: capsule.Context) -> Outcome:
    spec = cx.input_json() if cx.input else {}
    if not isinstance(spec, dict):
        raise CapsuleError("input must be a JSON object")
    unknown = sorted(set(spec) - _FIELDS)
    if unknown:
        raise CapsuleError(f"unknown input field `{unknown[0]}`; expected one of {sorted(_FIELDS)}")
    url = spec.get("url") or cx.config("target-url")
    if not url:
        raise CapsuleError("no `url` in the input and no `target-url` granted")
    started = time.monotonic()
    try:
        response = capsule.http.Request(spec.get("method", "GET"), url).send()
    except CapsuleError as e:
        return Outcome.error(f"{url} is unreachable: {e}")
    latency_ms = int((time.monotonic() - started) * 1000)

    cx.evidence(
        "response",
        "application/json",
        json.dumps(
            {
                "url": url,
                "status": response.status,
                "latency_ms": latency_ms,
                "headers": [f"{n}: {v.decode('utf-8', 'replace')}" for n, v in response.headers],
                "body_bytes": len(response.body),
                "body_preview": response.body[:4096].decode("utf-8", "replace"),
            }
        ),
    )

    failures = []
    expected = spec.get("expect_status") or [200]
    if response.status not in expected:
        failures.append(("status.unexpected", Severity.HIGH, f"status {response.status} (expected {expected})"))
    budget = spec.get("max_latency_ms")
    if budget is not None and latency_ms > budget:
        failures.append(("latency.over-budget", Severity.MEDIUM, f"answered in {latency_ms} ms (budget {budget} ms)"))
    for name, want in sorted(spec.get("headers", {}).items()):
        got = response.header(name)
        if got != want:
            failures.append((f"header.{name.lower()}", Severity.MEDIUM, f"header `{name}` is {got!r}, expected {want!r}"))
    text = response.text()
    for needle in spec.get("body_contains", []):
        if needle not in text:
            failures.append(("body.missing", Severity.HIGH, f"body does not contain {needle!r}"))

    checks = 1 + (budget is not None) + len(spec.get("headers", {})) + len(spec.get("body_contains", []))
    if not failures:
        return Outcome.passed(f"{url}: {response.status} in {latency_ms} ms, all {checks} checks hold")
    outcome = Outcome.failed(f"{url}: {len(failures)} of {checks} checks failed")
    for code, severity, message in failures:
        outcome.with_finding(code, severity, message)
    return outcome
