// The JavaScript client sees the real dtypes and calendars of the corpus served by
// tests/test_fidelity.py (FEDERATION_FIDELITY_URL: its hub's HTTP address).

import assert from "node:assert/strict";
import { test } from "node:test";

import { Federation } from "../../federation/js/client.js";

const HUB = process.env.FEDERATION_FIDELITY_URL;
const skip = HUB ? false : "FEDERATION_FIDELITY_URL is not set";

test("dtypes and calendars as strings", { skip }, async () => {
  const fed = new Federation(HUB);
  const catalog = await fed.catalog();
  const noleapRow = catalog.find((r) => r.dataset === "corpus/noleap");
  assert.deepEqual(noleapRow.calendars, { time: "noleap", time_bnds: "noleap" });
  assert.equal(noleapRow.dtypes.time, "object");
  assert.equal(noleapRow.dtype, "float32");

  const day360 = await fed.dataset("corpus/day360");
  const time = day360.variables.find((v) => v.name === "time");
  assert.equal(time.calendar, "360_day");
  assert.equal(time.values[29], "2000-01-30T00:00:00");
  assert.equal(time.values[30], "2000-02-01T00:00:00");

  const strings = await fed.dataset("corpus/strings");
  const byName = Object.fromEntries(strings.variables.map((v) => [v.name, v]));
  assert.equal(byName.station.dtype, "<U6");
  assert.deepEqual(byName.station.values, ["ALERT", "BARROW"]);
  assert.equal(byName.code.dtype, "|S4");
  assert.equal(byName.label.dtype, "<U14"); // NC_STRING, decoded to numpy strings

  const packed = await fed.dataset("corpus/packed");
  const sst = packed.variables.find((v) => v.name === "sst");
  assert.equal(sst.dtype, "float64"); // int16 scaled by a float64 scale_factor
  assert.equal(sst.encoding.dtype, "int16");
  assert.equal(sst.encoding.scale_factor, 0.01);
});
