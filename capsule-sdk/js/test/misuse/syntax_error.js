import * as capsule from "../../index.js";

export default capsule.test(async (cx) => {
  return capsule.Outcome.pass("x")
);
