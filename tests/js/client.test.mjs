// The JavaScript client against real hubs, started by tests/test_http_api.py:
//   FEDERATION_HUB_URL      a hub without tokens (sites awi, geomar, dkrz; methods at awi)
//   FEDERATION_SECURE_URL   a hub with tokens (site obs with echo, series)
//   FEDERATION_TOKEN        a valid token of the secure hub
// Run alone with: FEDERATION_HUB_URL=http://127.0.0.1:8787 node --test tests/js/

import assert from "node:assert/strict";
import { readFile } from "node:fs/promises";
import { test } from "node:test";

import {
  Federation,
  FederationError,
  flat,
  isArrayJSON,
  toRows,
  toSeries,
} from "../../federation/js/client.js";

const HUB = process.env.FEDERATION_HUB_URL;
const SECURE = process.env.FEDERATION_SECURE_URL;
const TOKEN = process.env.FEDERATION_TOKEN;
const skipOpen = HUB ? false : "FEDERATION_HUB_URL is not set";
const skipSecure = SECURE ? false : "FEDERATION_SECURE_URL is not set";

async function rejects(promise, check) {
  try {
    await promise;
  } catch (e) {
    assert.ok(e instanceof FederationError, `not a FederationError: ${e}`);
    check(e);
    return e;
  }
  assert.fail("expected a FederationError");
}

test("sites, catalog, dataset, methods, traffic", { skip: skipOpen }, async () => {
  const fed = new Federation(HUB);
  const sites = await fed.sites();
  assert.deepEqual(sites.map((s) => s.name).sort(), ["awi", "dkrz", "geomar"]);
  const awi = sites.find((s) => s.name === "awi");
  assert.equal(awi.status, "connected");
  assert.equal(awi.workers.length, 2);
  assert.ok(awi.memory_limit > 0);

  const catalog = await fed.catalog();
  const refs = catalog.map((r) => r.dataset);
  for (const ref of ["awi/sst", "geomar/chl", "dkrz/t2m"]) assert.ok(refs.includes(ref), ref);

  const sst = await fed.dataset("awi/sst");
  assert.deepEqual(sst.dims, { time: 40, lat: 180, lon: 360 });
  assert.deepEqual(sst.data_vars, ["sst"]);
  const time = sst.variables.find((v) => v.name === "time");
  assert.equal(time.values.length, 40);

  const methods = await fed.methods();
  assert.ok(methods.some((m) => m.ref === "awi/echo" && m.kind === "method"));
  assert.ok(methods.some((m) => m.ref === "awi/links" && m.kind === "workflow"));
  const echo = await fed.method("awi/echo");
  assert.deepEqual(echo.schema.required, ["x"]);
  assert.deepEqual(echo.schema.properties.x.type, "integer");

  const traffic = await fed.traffic();
  assert.deepEqual(traffic.columns, ["source", "destination", "bytes", "nbytes", "transfers"]);
  assert.equal(traffic.total, traffic.rows.reduce((n, r) => n + r[2], 0));
  const minute = await fed.traffic({ window: 60 });
  assert.equal(minute.window, 60);

  const doc = await fed.openapi();
  assert.ok(doc.paths["/methods/{site}/{name}"].post);
});

test("call: inline result and progress", { skip: skipOpen }, async () => {
  const fed = new Federation(HUB);
  const seen = [];
  const out = await fed.call("awi/echo", { x: 5 }, { onProgress: (p) => seen.push(p.fraction) });
  assert.equal(out, 5);
  assert.equal(seen.at(-1), 1);
  assert.match(await fed.call("awi/where"), /^awi-/);
});

test("call: a long workflow is polled as a job", { skip: skipOpen }, async () => {
  const fed = new Federation(HUB, { pollInterval: 100 });
  const statuses = [];
  const out = await fed.call(
    "awi/links",
    { sst: "awi/sst", chl: "geomar/chl", t2m: "dkrz/t2m" },
    { wait: 0, onProgress: (p, job) => statuses.push(job.status) },
  );
  assert.deepEqual(Object.keys(out).sort(), ["chl", "t2m"]);
  assert.ok(out.chl >= -1 && out.chl <= 1);
  assert.ok(statuses.length >= 2, statuses.join());
  assert.notEqual(statuses[0], "finished");
  assert.equal(statuses.at(-1), "finished");
});

test("call: arrays in JSON form, both ways", { skip: skipOpen }, async () => {
  const fed = new Federation(HUB);
  const data = {
    type: "DataArray",
    name: "t",
    dims: ["time"],
    data: [1, null, 3],
    coords: { time: { dims: ["time"], data: ["2020-01-01", "2020-01-02", "2020-01-03"],
                      dtype: "datetime64[ns]" } },
  };
  const out = await fed.call("awi/scale", { data, factor: 2 });
  assert.ok(isArrayJSON(out));
  assert.equal(out.type, "DataArray");
  assert.deepEqual(out.data, [2, null, 6]);
  assert.deepEqual(flat(out.data), [2, null, 6]);
  const rows = toRows(out);
  assert.equal(rows.length, 3);
  assert.match(String(rows[0].time), /^2020-01-01/);
  assert.equal(rows[0].t, 2);
  const series = toSeries(out);
  assert.equal(series.xLabel, "time");
  assert.deepEqual(series.y, [2, null, 6]);
});

test("errors: bad arguments, unknown names, failing methods", { skip: skipOpen }, async () => {
  const fed = new Federation(HUB);
  await rejects(fed.call("awi/echo", { x: "seven" }), (e) => {
    assert.equal(e.status, 400);
    assert.equal(e.code, "bad_arguments");
    assert.match(e.message, /parameter 'x' expects int/);
    assert.deepEqual(e.details.schema.required, ["x"]);
  });
  await rejects(fed.dataset("awi/sstt"), (e) => {
    assert.equal(e.status, 404);
    assert.match(e.message, /Did you mean 'awi\/sst'/);
  });
  await rejects(fed.method("awi/nope"), (e) => assert.equal(e.code, "not_found"));
  await rejects(fed.call("awi/fail", { message: "from node" }), (e) => {
    assert.equal(e.status, 500);
    assert.equal(e.code, "method_failed");
    assert.match(e.message, /failed at site 'awi': ValueError: from node/);
    assert.equal(e.job.status, "error");
  });
  await rejects(fed.dataset("no-slash"), (e) => assert.equal(e.code, "bad_request"));
  await rejects(new Federation("http://127.0.0.1:9").sites(), (e) => {
    assert.equal(e.code, "unreachable");
    assert.equal(e.status, 0);
  });
});

test("the hub serves this client", { skip: skipOpen }, async () => {
  const served = await (await fetch(`${HUB}/federation/client.js`)).text();
  const local = await readFile(new URL("../../federation/js/client.js", import.meta.url), "utf8");
  assert.equal(served, local);
  const mod = await import(`data:text/javascript,${encodeURIComponent(served)}`);
  assert.equal(typeof mod.Federation, "function");
});

test("tokens", { skip: skipSecure }, async () => {
  await rejects(new Federation(SECURE).sites(), (e) => {
    assert.equal(e.status, 401);
    assert.equal(e.code, "unauthorized");
  });
  await rejects(new Federation(SECURE, { token: "wrong" }).catalog(), (e) => {
    assert.equal(e.status, 403);
    assert.equal(e.code, "forbidden");
  });
  const fed = new Federation(SECURE, { token: TOKEN });
  assert.deepEqual((await fed.sites()).map((s) => s.name), ["obs"]);
  const wave = await fed.call("obs/series", { n: 5, amplitude: 2 });
  assert.deepEqual(wave.shape, [5]);
  assert.equal(wave.attrs.units, "1");
  const job = await fed.submit("obs/echo", { x: 3 });
  const done = await (async () => {
    let j = job;
    while (j.status !== "finished") {
      await new Promise((resolve) => setTimeout(resolve, 100));
      j = await fed.job(job.id);
    }
    return j;
  })();
  assert.equal(done.result, 3);
  await rejects(new Federation(SECURE, { token: "other" }).job(job.id), (e) =>
    assert.equal(e.status, 404),
  );
});
