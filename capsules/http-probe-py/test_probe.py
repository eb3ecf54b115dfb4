"""Native unit tests of the Python HTTP probe (pytest), with a fake runner."""

from edge_capsule import Verdict, http, testing

import probe


def answer(status, content_type, body):
    return lambda request: http.Response(status, [("content-type", content_type.encode())], body.encode())


def test_passes_against_a_healthy_service():
    run = testing.run(
        probe.probe,
        input={"url": "http://svc.test/health", "headers": {"content-type": "application/json"}, "body_contains": ['"status":"up"']},
        http_handler=answer(200, "application/json", '{"status":"up"}'),
    )
    assert run.outcome.verdict is Verdict.PASS, run.outcome
    assert [r.url for r in run.requests] == ["http://svc.test/health"]
    assert run.evidence[0].label == "response"
    assert run.evidence[0].json()["status"] == 200


def test_one_finding_per_broken_check():
    run = testing.run(
        probe.probe,
        input={"url": "http://svc.test/health", "headers": {"content-type": "application/json"}, "body_contains": ["up"]},
        http_handler=answer(503, "text/html", "<h1>maintenance</h1>"),
    )
    assert run.outcome.verdict is Verdict.FAIL
    assert [f.code for f in run.outcome.findings] == ["status.unexpected", "header.content-type", "body.missing"]


def test_an_ungranted_destination_is_an_error_naming_the_manifest_entry():
    run = testing.run(probe.probe, input={"url": "https://elsewhere.test/x"})
    assert run.outcome.verdict is Verdict.ERROR
    assert 'egress = ["https://elsewhere.test:443"]' in run.outcome.summary, run.outcome.summary


def test_the_url_falls_back_to_granted_config():
    run = testing.run(probe.probe, config={"target-url": "http://cfg.test/"}, http_handler=answer(200, "text/plain", "ok"))
    assert run.outcome.verdict is Verdict.PASS
    assert run.requests[0].url == "http://cfg.test/"


def test_unknown_input_fields_are_refused():
    run = testing.run(probe.probe, input={"urll": "http://x.test/"})
    assert run.outcome.verdict is Verdict.ERROR
    assert "unknown input field `urll`" in run.outcome.summary
