import edge_capsule as capsule


@capsule.test
def check():
    return capsule.Outcome.passed("no context")
