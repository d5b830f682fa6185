/** A response as oncely stores, replays and makes it, independent of any framework. */
export interface ResponseParts {
  status: number;
  /** Lower-case names; a name may repeat. */
  headers: [string, string][];
  body: Uint8Array;
}

/** The request body as an adapter can get it, for the fingerprint. */
export type RequestBody =
  | { kind: 'none' }
  /** Already parsed by the framework's body parser (Express): what the handler receives, and the request's Content-Type. */
  | { kind: 'parsed'; value: unknown; contentType?: string }
  | { kind: 'bytes'; bytes: Uint8Array; contentType: string | undefined }
  | { kind: 'too-large' };

/** What the protocol needs to know about a request; each adapter fills it from its framework. */
export interface RequestFacts {
  method: string;
  /** The route the request matched (or its path): part of the fingerprint. */
  route: string;
  /** Every value of a header, one entry per header line; `[]` when absent. */
  header(name: string): string[];
  /** The body, read at most up to `maxBytes` (more is `too-large`) without consuming it for the app. */
  body(maxBytes: number): Promise<RequestBody>;
}
