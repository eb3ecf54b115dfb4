import * as capsule from "../../index.js";

export const first = capsule.test(async (cx) => capsule.Outcome.pass("first"));

export default capsule.test(async (cx) => capsule.Outcome.pass("second"));
