import * as capsule from "../../index.js";

export default capsule.reproduce((cx, extra) => capsule.Outcome.pass("two arguments"));
