import * as capsule from "../../index.js";

export const check = capsule.test(async (cx) => capsule.Outcome.pass("named, not default"));
