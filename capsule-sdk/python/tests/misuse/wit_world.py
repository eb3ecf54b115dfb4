import edge_capsule as capsule


@capsule.test
def check(cx):
    return capsule.Outcome.passed("shadows the generated bindings")
