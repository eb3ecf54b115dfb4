import * as capsule from "../../index.js";

const settings = JSON.parse("{not json");

export default capsule.test(async (cx) => capsule.Outcome.pass(String(settings)));
