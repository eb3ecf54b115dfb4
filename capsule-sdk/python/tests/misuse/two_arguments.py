import edge_capsule as capsule


@capsule.reproduce
def check(cx, extra):
    return capsule.Outcome.passed("two arguments")
