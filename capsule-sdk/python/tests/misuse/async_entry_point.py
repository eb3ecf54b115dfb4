import edge_capsule as capsule


@capsule.test
async def check(cx):
    return capsule.Outcome.passed("async")
