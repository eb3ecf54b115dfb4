import * as capsule from "../../index.js";

export default capsule.test(function* (cx) {
  yield capsule.Outcome.pass("generator");
});
