import * as capsule from "../../index.js";

export default capsule.test({ egress: ["https://x.example.com:443"] });
