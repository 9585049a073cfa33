// dask-federation JavaScript client: a dependency-free ES module for browsers and Node >= 18.
//
//   import { Federation } from "dask-federation-client";    // Node, bundlers: npm install federation/js
//   import { Federation } from "http://hub:8787/federation/client.js";   // browsers: the hub serves it
//   const fed = new Federation("http://hub:8787", { token });
//   await fed.sites(); await fed.catalog(); await fed.dataset("awi/sst");
//   await fed.methods(); await fed.traffic();
//   const out = await fed.call("awi/echo", { x: 1 }, { onProgress: (p) => console.log(p.fraction) });
//
// It speaks the hub's HTTP API (<hub>/federation/api/v1/, described by openapi.json there).
// Array results come in a JSON form: {type: "ndarray" | "DataArray" | "Dataset" | "DataFrame" |
// "Series", dims, shape, dtype, data (nested lists), coords, attrs}; see toRows() and flat().

export const API_PATH = "/federation/api/v1";
export const VERSION = "1";

/** An error answered by the hub (or a failed call), with its HTTP status and error code. */
export class FederationError extends Error {
  constructor(message, { status = 0, code = "error", details = {}, job = undefined } = {}) {
    super(message);
    this.name = "FederationError";
    this.status = status;
    this.code = code;
    this.details = details;
    this.job = job;
  }
}

const sleep = (ms, signal) =>
  new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason ?? new Error("aborted"));
    const t = setTimeout(resolve, ms);
    signal?.addEventListener(
      "abort",
      () => {
        clearTimeout(t);
        reject(signal.reason ?? new Error("aborted"));
      },
      { once: true },
    );
  });

/** "site/name" -> URL path segments (a name may contain "/", e.g. "awi/results/x"). */
function refPath(ref) {
  if (typeof ref !== "string" || !ref.includes("/")) {
    throw new FederationError(`expected "site/name", got ${JSON.stringify(ref)}`, {
      code: "bad_request",
      status: 400,
    });
  }
  return ref.split("/").map(encodeURIComponent).join("/");
}

export class Federation {
  /**
   * @param {string} url  the hub's dashboard/HTTP address, e.g. "http://hub:8787" (a dashboard
   *   prefix such as "http://hub:8787/dask" works too)
   * @param {{token?: string, fetch?: typeof fetch, pollInterval?: number,
   *   maxPollInterval?: number, headers?: Record<string, string>}} [options]
   */
  constructor(url, options = {}) {
    if (!url) {
      url = typeof location !== "undefined" ? location.origin : "";
    }
    this.url = String(url).replace(/\/+$/, "");
    this.token = options.token ?? null;
    this.pollInterval = options.pollInterval ?? 500;
    this.maxPollInterval = options.maxPollInterval ?? 2000;
    this.headers = options.headers ?? {};
    this._fetch = options.fetch ?? globalThis.fetch?.bind(globalThis);
    if (!this._fetch) {
      throw new FederationError("no fetch(): use Node >= 18 or pass options.fetch");
    }
  }

  /** Low level: one API request; returns the parsed JSON (throws FederationError). */
  async request(method, path, { body, query, signal, headers } = {}) {
    let url = `${this.url}${API_PATH}/${path.replace(/^\/+/, "")}`;
    if (query) {
      const q = new URLSearchParams();
      for (const [k, v] of Object.entries(query)) if (v !== undefined && v !== null) q.set(k, v);
      const s = q.toString();
      if (s) url += `?${s}`;
    }
    const h = { Accept: "application/json", ...this.headers, ...headers };
    if (this.token) h.Authorization = `Bearer ${this.token}`;
    if (body !== undefined) h["Content-Type"] = "application/json";
    let response;
    try {
      response = await this._fetch(url, {
        method,
        headers: h,
        body: body === undefined ? undefined : JSON.stringify(body),
        signal,
      });
    } catch (e) {
      if (e?.name === "AbortError") throw e;
      throw new FederationError(`cannot reach the hub at ${this.url}: ${e?.message ?? e}`, {
        code: "unreachable",
      });
    }
    const text = await response.text();
    let data;
    try {
      data = text ? JSON.parse(text) : null;
    } catch {
      data = null;
    }
    if (!response.ok) {
      const err = data?.error ?? {};
      const { status, code, message, job, ...details } = err;
      throw new FederationError(message ?? `HTTP ${response.status} ${response.statusText}`, {
        status: response.status,
        code: code ?? "http_error",
        details,
        job,
      });
    }
    return data;
  }

  /** Sites: name, status, workers, nthreads, memory_used, memory_limit, datasets, methods. */
  async sites(options) {
    return (await this.request("GET", "sites", options)).sites;
  }

  /** The catalog: one row per dataset or published result. */
  async catalog(options) {
    return (await this.request("GET", "catalog", options)).datasets;
  }

  /** Metadata of one dataset ("site/name"): variables, dims, coordinates, attrs. */
  async dataset(ref, options) {
    return this.request("GET", `datasets/${refPath(ref)}`, options);
  }

  /** Shared methods and workflows. */
  async methods(options) {
    return (await this.request("GET", "methods", options)).methods;
  }

  /** One method: signature, doc, parameters and `schema` (JSON schema of its arguments). */
  async method(ref, options) {
    return this.request("GET", `methods/${refPath(ref)}`, options);
  }

  /** Traffic across site borders; {window: 60} for the last minute. */
  async traffic({ window, signal } = {}) {
    return this.request("GET", "traffic", { query: { window }, signal });
  }

  /** The OpenAPI description of the hub's API. */
  async openapi(options) {
    return this.request("GET", "openapi.json", options);
  }

  /** Start a call without waiting; returns the job ({id, status, progress, ...}). */
  async submit(ref, args = {}, { wait = 0, signal } = {}) {
    return this.request("POST", `methods/${refPath(ref)}`, {
      body: args,
      query: { wait },
      signal,
    });
  }

  /** A job's status, progress and (when finished) result. */
  async job(id, options) {
    return this.request("GET", `jobs/${encodeURIComponent(id)}`, options);
  }

  /** Cancel a job. */
  async cancel(id, options) {
    return this.request("DELETE", `jobs/${encodeURIComponent(id)}`, options);
  }

  /**
   * Call a shared method at its site and return its result (JSON form).
   * @param {string} ref "site/name"
   * @param {object} args arguments by name
   * @param {{onProgress?: (progress: {done: number, total: number, fraction: number},
   *   job: object) => void, wait?: number, signal?: AbortSignal, timeout?: number}} [options]
   */
  async call(ref, args = {}, { onProgress, wait = 2, signal, timeout } = {}) {
    const deadline = timeout ? Date.now() + timeout * 1000 : Infinity;
    let job;
    try {
      job = await this.submit(ref, args, { wait, signal });
    } catch (e) {
      if (e instanceof FederationError && e.job) {
        onProgress?.(e.job.progress, e.job);
      }
      throw e;
    }
    let delay = this.pollInterval;
    for (;;) {
      onProgress?.(job.progress, job);
      if (job.status === "finished") return job.result;
      if (job.status === "error" || job.status === "cancelled") {
        const err = job.error ?? {};
        throw new FederationError(err.message ?? `job ${job.id} ${job.status}`, {
          status: 500,
          code: err.code ?? job.status,
          details: err,
          job,
        });
      }
      if (Date.now() > deadline) {
        await this.cancel(job.id).catch(() => {});
        throw new FederationError(`${ref} did not finish within ${timeout} s (cancelled)`, {
          code: "timeout",
          job,
        });
      }
      try {
        await sleep(delay, signal);
      } catch (e) {
        await this.cancel(job.id).catch(() => {});
        throw e;
      }
      delay = Math.min(delay * 1.5, this.maxPollInterval);
      job = await this.job(job.id, { signal });
    }
  }
}

// -- results in JSON form ----------------------------------------------------------------------

/** True for the tagged array/table forms of the API. */
export function isArrayJSON(value) {
  return (
    value !== null &&
    typeof value === "object" &&
    ["ndarray", "DataArray", "Dataset", "DataFrame", "Series"].includes(value.type)
  );
}

/** Nested lists -> one flat array (C order). */
export function flat(data) {
  return Array.isArray(data) ? data.flat(Infinity) : [data];
}

/**
 * Rows ({column: value} objects) for a table: DataFrame and Series rows; the values of a
 * 1-D DataArray/ndarray with their coordinate; a 2-D ndarray/DataArray row by row; a
 * Dataset's 1-D variables side by side; an array of objects as is. Otherwise null.
 */
export function toRows(value) {
  if (Array.isArray(value)) {
    if (value.every((v) => v !== null && typeof v === "object" && !Array.isArray(v))) return value;
    return value.map((v, i) => ({ index: i, value: v }));
  }
  if (!isArrayJSON(value)) return null;
  switch (value.type) {
    case "DataFrame":
      return value.data.map((row, i) => {
        const out = { index: value.index[i] };
        value.columns.forEach((c, j) => (out[c] = row[j]));
        return out;
      });
    case "Series":
      return value.data.map((v, i) => ({ index: value.index[i], [value.name ?? "value"]: v }));
    case "ndarray":
    case "DataArray": {
      const shape = value.shape ?? [];
      const name = value.name ?? "value";
      if (shape.length === 0) return [{ [name]: value.data }];
      if (shape.length === 1) {
        const dim = value.dims?.[0] ?? "index";
        const coord = value.coords?.[dim]?.data;
        return value.data.map((v, i) => ({ [dim]: coord ? coord[i] : i, [name]: v }));
      }
      if (shape.length === 2) {
        const [d0, d1] = value.dims ?? ["row", "column"];
        const c0 = value.coords?.[d0]?.data;
        const c1 = value.coords?.[d1]?.data;
        return value.data.map((row, i) => {
          const out = { [d0]: c0 ? c0[i] : i };
          row.forEach((v, j) => (out[String(c1 ? c1[j] : j)] = v));
          return out;
        });
      }
      return null;
    }
    case "Dataset": {
      const vars = Object.entries(value.data_vars).filter(([, v]) => v.dims.length === 1);
      if (!vars.length) return null;
      const dim = vars[0][1].dims[0];
      const same = vars.filter(([, v]) => v.dims[0] === dim);
      const coord = value.coords?.[dim]?.data;
      return same[0][1].data.map((_, i) => {
        const out = { [dim]: coord ? coord[i] : i };
        for (const [k, v] of same) out[k] = v.data[i];
        return out;
      });
    }
    default:
      return null;
  }
}

/** (x, y) series for a line plot of a 1-D result, or null. */
export function toSeries(value) {
  if (!isArrayJSON(value)) {
    if (Array.isArray(value) && value.every((v) => typeof v === "number" || v === null)) {
      return { x: value.map((_, i) => i), y: value, xLabel: "index", yLabel: "value" };
    }
    return null;
  }
  if (value.type === "Series") {
    return { x: value.index, y: value.data, xLabel: "index", yLabel: value.name ?? "value" };
  }
  if ((value.type === "ndarray" || value.type === "DataArray") && value.shape?.length === 1) {
    const dim = value.dims?.[0] ?? "index";
    const coord = value.coords?.[dim]?.data;
    return {
      x: coord ?? value.data.map((_, i) => i),
      y: value.data,
      xLabel: dim,
      yLabel: value.name ?? "value",
    };
  }
  return null;
}

export default Federation;
