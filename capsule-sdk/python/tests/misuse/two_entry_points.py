import edge_capsule as capsule


@capsule.test
def first(cx):
    return capsule.Outcome.passed("first")


@capsule.test
def second(cx):
    return capsule.Outcome.passed("second")
