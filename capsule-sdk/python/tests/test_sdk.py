"""The Python SDK natively: build-time refusals of misuse (named for the attack), the
context, outcomes, proposals and the denial error. Run: python3 -m pytest capsule-sdk/python/tests"""

import json
from pathlib import Path

import pytest

import edge_capsule as capsule
from edge_capsule import CapsuleError, Kind, Severity, Verdict, build, http, testing
from edge_capsule import _entry

MISUSE = Path(__file__).parent / "misuse"


@pytest.fixture(autouse=True)
def fresh_registry():
    _entry.reset()
    yield
    _entry.reset()


def refusal(capfd, *args):
    code = build.main([*map(str, args), "--check"])
    err = capfd.readouterr().err
    return code, err.strip()


def test_two_entry_points_are_refused_naming_both_lines(capfd):
    f = MISUSE / "two_entry_points.py"
    code, err = refusal(capfd, f)
    assert code == 2
    assert err == (
        f"error: {f}:9: a second capsule entry point `second` (@capsule.test); a capsule has exactly one, "
        f"and `first` at {f}:4 is already marked @capsule.test. Remove one of the decorators."
    )


def test_an_entry_point_without_the_context_is_refused(capfd):
    f = MISUSE / "no_argument.py"
    code, err = refusal(capfd, f)
    assert code == 2
    assert err == (
        f"error: {f}:4: the capsule entry point `check` takes (no arguments); "
        "it must take exactly one argument, the context: `def check(cx):`"
    )


def test_an_entry_point_with_two_arguments_is_refused(capfd):
    f = MISUSE / "two_arguments.py"
    code, err = refusal(capfd, f)
    assert code == 2
    assert err == (
        f"error: {f}:4: the capsule entry point `check` takes (cx, extra); "
        "it must take exactly one argument, the context: `def check(cx):`"
    )


def test_an_async_entry_point_is_refused(capfd):
    f = MISUSE / "async_entry_point.py"
    code, err = refusal(capfd, f)
    assert code == 2
    assert err == f"error: {f}:4: the capsule entry point `check` cannot be `async def`; write a plain `def`"


def test_arguments_to_the_decorator_are_refused(capfd):
    f = MISUSE / "decorator_with_arguments.py"
    code, err = refusal(capfd, f)
    assert code == 2
    assert err == (
        f"error: {f}:4: @capsule.test takes no arguments and marks a function: write `@capsule.test` "
        "directly above `def NAME(cx):` (capabilities belong in capsule.toml)"
    )


def test_a_module_without_an_entry_point_is_refused(capfd):
    f = MISUSE / "no_entry_point.py"
    code, err = refusal(capfd, f)
    assert code == 2
    assert err == (
        f"error: {f}: no capsule entry point; mark one function with @capsule.test, "
        "@capsule.reproduce or @capsule.remediate (after `import edge_capsule as capsule`)"
    )


def test_a_kind_other_than_the_manifests_is_refused(capfd):
    f = MISUSE / "kind_differs_from_manifest.py"
    m = MISUSE / "kind_differs_from_manifest.toml"
    code, err = refusal(capfd, f, "--manifest", m)
    assert code == 2
    assert err == (
        f"error: {f}:4: the entry point `check` is marked @capsule.test, but {m} says kind = 'remediate'; "
        "make them agree (the runner refuses a capsule whose code and signed manifest name different kinds)"
    )


def test_an_import_failure_names_the_line(capfd):
    f = MISUSE / "raises_on_import.py"
    code, err = refusal(capfd, f)
    assert code == 2
    assert err == f"error: {f}:4: importing the module failed: KeyError: 'timeout'"


def test_a_module_shadowing_the_bindings_is_refused(capfd):
    f = MISUSE / "wit_world.py"
    code, err = refusal(capfd, f)
    assert code == 2
    assert err == f"error: {f}: the module name `wit_world` is used by the build; rename the file (e.g. `wit_world_capsule.py`)"


def test_a_missing_manifest_names_the_flag(capfd):
    f = MISUSE / "kind_differs_from_manifest.py"
    code, err = refusal(capfd, f, "--manifest", MISUSE / "absent.toml")
    assert code == 2
    assert err == f"error: --manifest {MISUSE / 'absent.toml'}: No such file or directory; pass the capsule's capsule.toml"


def test_a_good_module_passes_the_check(capfd):
    f = Path(__file__).parents[3] / "capsules" / "http-probe-py" / "probe.py"
    code = build.main([str(f), "--manifest", str(f.parent / "capsule.toml"), "--check"])
    out = capfd.readouterr().out.strip()
    assert code == 0
    assert out == f"ok: {f}:23: `probe` is a test capsule entry point"


def test_building_without_componentize_py_names_the_install(monkeypatch, capfd, tmp_path):
    f = Path(__file__).parents[3] / "capsules" / "http-probe-py" / "probe.py"

    def missing(name):
        raise build.importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(build.importlib.metadata, "version", missing)
    code = build.main([str(f), "-o", str(tmp_path / "x.wasm")])
    err = capfd.readouterr().err.strip()
    assert code == 1
    assert err.startswith("error: building needs componentize-py 0.25.1 (it is not installed); run: ")
    assert err.endswith(" -m pip install componentize-py==0.25.1")


def test_outcomes_findings_and_evidence_through_the_fake_runner():
    @capsule.test
    def check(cx):
        data = cx.input_json()
        cx.evidence("input", "application/json", cx.input)
        return capsule.Outcome.failed("down").with_finding("status", Severity.HIGH, f"is {data['status']}")

    run = testing.run(check, input={"status": "down"}, config={"k": "v"})
    assert run.outcome.verdict is Verdict.FAIL
    assert run.outcome.findings == [capsule.Finding("status", Severity.HIGH, "is down")]
    assert run.evidence[0].json() == {"status": "down"}


def test_what_an_entry_point_raises_or_wrongly_returns_is_an_error_verdict():
    @capsule.test
    def check(cx):
        if cx.input == b"raise":
            raise CapsuleError("no target given")
        if cx.input == b"crash":
            return {}["missing"]
        return "pass"

    assert testing.run(check, input="raise").outcome == capsule.Outcome.error("no target given")
    crashed = testing.run(check, input="crash").outcome
    assert crashed.verdict is Verdict.ERROR and crashed.summary.startswith("KeyError: 'missing' (at ")
    wrong = testing.run(check, input="x").outcome
    assert wrong.verdict is Verdict.ERROR
    assert wrong.summary.endswith("returned str, not an edge_capsule.Outcome")


def test_input_text_and_json_errors_say_what_is_wrong():
    cx = capsule.Context(Kind.TEST, b"\xff", testing._FakeHost({}, [], 1))
    with pytest.raises(CapsuleError, match="input is not UTF-8 text"):
        cx.input_text()
    with pytest.raises(CapsuleError, match="input is not the expected JSON"):
        cx.input_json()


def test_only_remediate_may_propose_and_proposals_match_the_rust_encoding():
    @capsule.remediate
    def fix(cx):
        cx.propose(capsule.Proposal(target="/c", diff="-a\n+b\n", rollback="-b\n+a\n", rationale="why"))
        cx.propose(
            capsule.HttpProposal(
                http=capsule.HttpRequest("put", "https://api.example.com/f", [("content-type", "text/plain")], "off"),
                http_rollback=None,
                rationale="turn it off",
            )
        )
        return capsule.Outcome.failed("fix proposed")

    run = testing.run(fix)
    assert [e.media_type for e in run.evidence] == [capsule.PROPOSAL_MEDIA_TYPE] * 2
    assert run.evidence[0].json() == {"target": "/c", "diff": "-a\n+b\n", "rollback": "-b\n+a\n", "rationale": "why"}
    assert run.evidence[1].json() == {
        "http": {"method": "PUT", "url": "https://api.example.com/f", "headers": [["content-type", "text/plain"]], "body": "off"},
        "http_rollback": None,
        "rationale": "turn it off",
    }
    _entry.reset()

    @capsule.test
    def check(cx):
        cx.propose(capsule.Proposal("/c", "", "", ""))
        return capsule.Outcome.passed("unreachable")

    assert testing.run(check).outcome.summary == (
        "only a `remediate` capsule may propose changes; decorate the function with @capsule.remediate"
    )


def test_a_refused_request_names_the_manifest_entry_that_grants_it():
    err = http.denied(http.get("http://10.0.0.5:8080/ready"))
    assert str(err) == (
        "GET http://10.0.0.5:8080/ready: request denied: the destination is not granted (list it under "
        '[capabilities] egress in capsule.toml, e.g. egress = ["http://10.0.0.5:8080"], and the site must allow it)'
    )
    assert http.get("https://status.example.com/health").egress_entry() == "https://status.example.com:443"


def test_the_evidence_quota_is_an_error_saying_so():
    @capsule.test
    def check(cx):
        for i in range(3):
            cx.evidence(f"item-{i}", "text/plain", "x")
        return capsule.Outcome.passed("unreachable")

    assert testing.run(check, max_evidence_items=2).outcome.summary == (
        "evidence `item-2` was not recorded: the run's evidence quota of 2 items is spent"
    )


def test_the_wit_contract_copy_is_the_contract():
    root = Path(__file__).parents[2]
    assert (root / "python/edge_capsule/wit/capsule.wit").read_bytes() == (root / "wit/capsule.wit").read_bytes()


def test_a_module_that_does_not_parse_names_the_line(capfd):
    f = MISUSE / "syntax_error.py"
    code, err = refusal(capfd, f)
    assert code == 2
    assert err == f"error: {f}:5: syntax error: expected ':'"
