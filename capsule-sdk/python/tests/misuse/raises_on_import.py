import edge_capsule as capsule

SETTINGS = {"url": "http://x.test"}
TIMEOUT = SETTINGS["timeout"]


@capsule.test
def check(cx):
    return capsule.Outcome.passed("never built")
