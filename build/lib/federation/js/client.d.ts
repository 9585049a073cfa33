// Type declarations of the dask-federation JavaScript client (client.js).

export declare const API_PATH: "/federation/api/v1";
export declare const VERSION: string;

export interface Site {
  name: string;
  status: "connected" | "no workers" | "offline";
  workers: string[];
  nthreads: number;
  memory_limit: number;
  memory_used: number;
  datasets: string[];
  methods?: string[];
  results?: string[];
  tasks_done: number;
  connectivity?: "direct" | "outbound-only";
  relayed_bytes?: number;
  [key: string]: unknown;
}

export interface CatalogRow {
  dataset: string;
  site: string;
  kind: "dataset" | "result";
  variables: string[];
  dims: Record<string, number>;
  shape: number[];
  dtype: string;
  nbytes: number;
  chunks: Record<string, number>;
  description: string;
}

export interface VariableInfo {
  name: string;
  dims: string[];
  shape: number[];
  dtype: string;
  chunks: number[];
  nbytes: number;
  attrs: Record<string, unknown>;
  is_coord: boolean;
  /** coordinate values, when the catalog carries them (index coordinates always) */
  values?: unknown[];
}

export interface DatasetInfo {
  dataset: string;
  site: string;
  name: string;
  kind: "dataset" | "result";
  description: string;
  version: string;
  dims: Record<string, number>;
  nbytes: number;
  data_vars: string[];
  attrs: Record<string, unknown>;
  variables: VariableInfo[];
  provenance?: Record<string, unknown>;
}

/** A JSON schema (2020-12); array parameters carry "x-federation-type". */
export type JSONSchema = Record<string, unknown> & {
  type?: string | string[];
  properties?: Record<string, JSONSchema>;
  required?: string[];
  default?: unknown;
  enum?: unknown[];
  "x-federation-type"?: "xarray.Dataset" | "xarray.DataArray" | "numpy.ndarray";
};

export interface ParameterInfo {
  name: string;
  kind: string;
  annotation: string;
  schema: JSONSchema;
  has_default: boolean;
  default: unknown;
}

export interface MethodInfo {
  ref: string;
  site: string;
  name: string;
  kind: "method" | "workflow";
  signature: string;
  summary: string;
  doc: string;
  parameters: ParameterInfo[];
  returns: JSONSchema;
  return_annotation?: string;
  version?: string;
  /** JSON schema of the arguments object (from method(), not methods()) */
  schema?: JSONSchema;
}

export interface Progress {
  done: number;
  total: number;
  fraction: number;
}

export interface Job<R = Result> {
  id: string;
  method: string;
  status: "pending" | "running" | "finished" | "error" | "cancelled";
  progress: Progress;
  submitted: number;
  finished: number | null;
  href: string;
  result?: R;
  error?: { code: string; type?: string; message: string };
}

export interface Traffic {
  columns: ["source", "destination", "bytes", "nbytes", "transfers"];
  rows: [source: string, destination: string, bytes: number, nbytes: number, transfers: number][];
  total: number;
  tasks: Record<string, number>;
  window: number | null;
  since: number | null;
  time: number;
}

export interface VariableJSON {
  dims: string[];
  shape: number[];
  dtype: string;
  /** nested lists in C order; NaN as null, dates as ISO 8601 strings */
  data: unknown;
  attrs?: Record<string, unknown>;
}

export type ArrayJSON =
  | { type: "ndarray"; dtype: string; shape: number[]; data: unknown }
  | ({ type: "DataArray"; name: string | null; coords: Record<string, VariableJSON> } & VariableJSON)
  | {
      type: "Dataset";
      dims: Record<string, number>;
      data_vars: Record<string, VariableJSON>;
      coords: Record<string, VariableJSON>;
      attrs: Record<string, unknown>;
    }
  | { type: "DataFrame"; columns: unknown[]; index: unknown[]; data: unknown[][] }
  | { type: "Series"; name: unknown; index: unknown[]; data: unknown[] };

export type Result =
  | null
  | boolean
  | number
  | string
  | Result[]
  | ArrayJSON
  | { type: "bytes"; base64: string }
  | { type: "object"; python_type: string; repr: string }
  | { [key: string]: Result };

export interface FederationOptions {
  /** access token, sent as "Authorization: Bearer <token>" */
  token?: string | null;
  /** a fetch implementation (default: globalThis.fetch) */
  fetch?: typeof fetch;
  /** first delay between job polls, ms (default 500, growing to maxPollInterval) */
  pollInterval?: number;
  maxPollInterval?: number;
  headers?: Record<string, string>;
}

export interface RequestOptions {
  signal?: AbortSignal;
}

export interface CallOptions extends RequestOptions {
  onProgress?: (progress: Progress, job: Job) => void;
  /** seconds the hub may wait before answering with a job to poll (default 2, max 60) */
  wait?: number;
  /** give up (and cancel) after this many seconds */
  timeout?: number;
}

export declare class FederationError extends Error {
  constructor(
    message: string,
    options?: { status?: number; code?: string; details?: Record<string, unknown>; job?: Job },
  );
  /** HTTP status (0 if the hub was not reached) */
  status: number;
  /** "not_found", "bad_arguments", "unauthorized", "forbidden", "method_failed", ... */
  code: string;
  /** more about the error, e.g. `schema` for bad_arguments */
  details: Record<string, unknown>;
  job?: Job;
}

export declare class Federation {
  constructor(url?: string, options?: FederationOptions);
  readonly url: string;
  token: string | null;
  request<T = unknown>(
    method: "GET" | "POST" | "DELETE",
    path: string,
    options?: RequestOptions & {
      body?: unknown;
      query?: Record<string, string | number | undefined | null>;
      headers?: Record<string, string>;
    },
  ): Promise<T>;
  sites(options?: RequestOptions): Promise<Site[]>;
  catalog(options?: RequestOptions): Promise<CatalogRow[]>;
  dataset(ref: string, options?: RequestOptions): Promise<DatasetInfo>;
  methods(options?: RequestOptions): Promise<MethodInfo[]>;
  method(ref: string, options?: RequestOptions): Promise<MethodInfo & { schema: JSONSchema }>;
  traffic(options?: RequestOptions & { window?: number }): Promise<Traffic>;
  openapi(options?: RequestOptions): Promise<Record<string, unknown>>;
  submit(
    ref: string,
    args?: Record<string, unknown>,
    options?: RequestOptions & { wait?: number },
  ): Promise<Job>;
  job(id: string, options?: RequestOptions): Promise<Job>;
  cancel(id: string, options?: RequestOptions): Promise<Job>;
  call<R = Result>(ref: string, args?: Record<string, unknown>, options?: CallOptions): Promise<R>;
}

export declare function isArrayJSON(value: unknown): value is ArrayJSON;
export declare function flat(data: unknown): unknown[];
export declare function toRows(value: unknown): Record<string, unknown>[] | null;
export declare function toSeries(
  value: unknown,
): { x: unknown[]; y: unknown[]; xLabel: string; yLabel: string } | null;

export default Federation;
