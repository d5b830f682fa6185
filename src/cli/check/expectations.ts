/**
 * What each probe checks, what the IETF httpapi draft "The Idempotency-Key HTTP Header Field"
 * (draft-ietf-httpapi-idempotency-key-header-07) expects, and Stripe's behaviour where the draft
 * is silent (https://docs.stripe.com/api/idempotent_requests). Section names are the draft's.
 */
import type { ProbeId } from './types.js';

export interface Expectation {
  title: string;
  expected: string;
  source: string;
}

export const DRAFT = 'draft-ietf-httpapi-idempotency-key-header-07';

export const EXPECTATIONS: Record<ProbeId, Expectation> = {
  'missing-key': {
    title: 'Missing key',
    expected: '400 when the operation requires the key, with a body or Link pointing to the documentation. ' +
      'An endpoint may make the key optional; a keyless request then runs unprotected (a warning).',
    source: 'IETF draft, "Error Handling"',
  },
  'malformed-key': {
    title: 'Malformed keys',
    expected: '400. The key is an sf-string (RFC 8941 §3.3.3: printable ASCII, in quotes), in one field line; ' +
      'the draft asks servers to validate the key before processing. Stripe caps keys at 255 characters.',
    source: 'IETF draft, "Syntax" and "Security Considerations"; Stripe',
  },
  replay: {
    title: 'Replay fidelity',
    expected: 'The result of the first request again, success or error, without running it again: ' +
      'same status, same body bytes, same Location. Stripe replays the saved status and body, 500s included.',
    source: 'IETF draft, "Idempotency Enforcement"; Stripe',
  },
  'other-body': {
    title: 'Same key, other body',
    expected: '422: a key must not be reused with another payload, and the server refuses it instead of ' +
      'running or replaying. Stripe compares the parameters with the first request and answers an idempotency error.',
    source: 'IETF draft, "Uniqueness of Idempotency Key" and "Error Handling"; Stripe',
  },
  concurrent: {
    title: 'Concurrent duplicates',
    expected: 'One execution. A duplicate that arrives while the first is processed gets 409 Conflict ' +
      '(or, on servers that wait, the first result).',
    source: 'IETF draft, "Idempotency Enforcement" and "Error Handling"',
  },
  'in-flight': {
    title: 'Retry while in flight',
    expected: '409 Conflict while the original request is still processed; a server that waits for it and ' +
      'replays its result is also safe. Never a second execution.',
    source: 'IETF draft, "Idempotency Enforcement" and "Error Handling"',
  },
};

/** The one line every report carries about how executions were counted. */
export const INFERENCE_NOTE =
  'Executions are inferred, not counted: a black-box check sees only responses, so it counts distinct ' +
  'resources in 2xx responses (Location, JSON id/*_id/*Id fields) or, where none is named, distinct bodies.';
