import edge_capsule as capsule


@capsule.test("egress")
def check(cx):
    return capsule.Outcome.passed("arguments")
