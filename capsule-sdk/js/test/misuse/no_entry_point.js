import * as capsule from "../../index.js";

export default async (cx) => capsule.Outcome.pass("not marked");
