// Fault injection and call recording of the Node.js demo service.
//
// Mirrors demo/control.py (the Python services' logic) exactly: rules matched in order by
// method name (empty = any), `times` 0 = every call, `delay_ms` waited first and then the fault;
// every business call recorded on arrival with its request as proto3 JSON text and the selected
// metadata, and finished with OK, the code it failed with, or CANCELLED when the caller went away.
'use strict';

const grpc = require('@grpc/grpc-js');

const TRACE_HEADERS = new Set(['traceparent', 'tracestate', 'baggage', 'x-request-id', 'b3']);
const RECORDED_PREFIXES = ['x-b3-', 'x-demo-'];

/** A call failure with a gRPC code name, from business logic or an injected fault. */
class DemoError extends Error {
  constructor(code, message, retryAfterMs = 0) {
    super(`${code}: ${message}`);
    this.code = code;
    this.details = message;
    this.retryAfterMs = retryAfterMs;
  }
}

/** Validate the fields of a Fault (as decoded by proto-loader) and build its rule. */
function makeRule(fault) {
  const rule = {
    method: (fault.method || '').trim(),
    code: (fault.code || '').trim().toUpperCase(),
    message: fault.message || '',
    times: fault.times || 0,
    delay_ms: fault.delay_ms || 0,
    retry_after_ms: fault.retry_after_ms || 0,
  };
  for (const name of ['times', 'delay_ms', 'retry_after_ms']) {
    if (rule[name] < 0) {
      throw new DemoError('INVALID_ARGUMENT', `fault ${name} must be >= 0, got ${rule[name]}`);
    }
  }
  if (rule.code && (!(rule.code in grpc.status) || rule.code === 'OK')) {
    throw new DemoError(
      'INVALID_ARGUMENT',
      `unknown fault code '${rule.code}': use a gRPC code name other than OK`,
    );
  }
  rule.remaining = rule.times;
  return rule;
}

/** Keep the trace and demo headers of a call's metadata (keys are lower-case in grpc-js). */
function selectMetadata(metadata) {
  const selected = {};
  for (const [key, value] of Object.entries(metadata.getMap())) {
    if (key.endsWith('-bin') || typeof value !== 'string') continue;
    if (TRACE_HEADERS.has(key) || RECORDED_PREFIXES.some((p) => key.startsWith(p))) {
      selected[key] = value;
    }
  }
  return selected;
}

/** The fault rules and call log of one service process. */
class ControlPlane {
  constructor() {
    this.rules = [];
    this.records = [];
  }

  addFault(rule) {
    this.rules.push(rule);
  }

  reset() {
    this.rules = [];
    this.records = [];
  }

  calls() {
    return this.records.slice();
  }

  takeFault(method) {
    for (const rule of this.rules) {
      if (rule.method && rule.method !== method) continue;
      if (rule.times === 0) return rule;
      if (rule.remaining > 0) {
        rule.remaining -= 1;
        return rule;
      }
    }
    return null;
  }

  /**
   * Record a unary business call, apply the matching fault, then run `business(request)`.
   * Answers through `callback`; a cancelled call is recorded as CANCELLED and never answered.
   */
  handleUnary(method, call, callback, business) {
    const record = {
      method,
      request_json: JSON.stringify(call.request),
      metadata: selectMetadata(call.metadata),
      outcome: '',
      started_unix_ms: Date.now(),
      ended_unix_ms: 0,
    };
    this.records.push(record);
    let timer = null;
    let done = false;
    const finish = (outcome) => {
      done = true;
      record.outcome = outcome;
      record.ended_unix_ms = Date.now();
    };
    call.on('cancelled', () => {
      if (done) return;
      if (timer !== null) clearTimeout(timer);
      finish('CANCELLED');
    });
    const respond = (rule) => {
      if (done) return;
      try {
        if (rule !== null && rule.code) {
          throw new DemoError(
            rule.code,
            rule.message || `injected fault: ${rule.code}`,
            rule.retry_after_ms,
          );
        }
        const response = business(call.request);
        finish('OK');
        callback(null, response);
      } catch (err) {
        if (!(err instanceof DemoError)) {
          finish('UNKNOWN');
          callback({ code: grpc.status.UNKNOWN, details: String(err) });
          return;
        }
        finish(err.code);
        callback(toServiceError(err));
      }
    };
    const rule = this.takeFault(method);
    if (rule !== null && rule.delay_ms > 0) {
      timer = setTimeout(() => {
        timer = null;
        respond(rule);
      }, rule.delay_ms);
    } else {
      respond(rule);
    }
  }
}

// Minimal protobuf writer for google.rpc.Status carrying one google.rpc.RetryInfo, so the Node
// service sends the same rich error as the Python ones without another dependency.
function varint(n) {
  const out = [];
  let v = BigInt(n);
  do {
    let byte = Number(v & 0x7fn);
    v >>= 7n;
    if (v > 0n) byte |= 0x80;
    out.push(byte);
  } while (v > 0n);
  return Buffer.from(out);
}

function field(number, wireType, payload) {
  const key = varint((number << 3) | wireType);
  if (wireType === 0) return Buffer.concat([key, varint(payload)]);
  return Buffer.concat([key, varint(payload.length), payload]);
}

function statusWithRetryInfo(code, message, retryAfterMs) {
  const seconds = Math.floor(retryAfterMs / 1000);
  const nanos = (retryAfterMs % 1000) * 1e6;
  const duration = Buffer.concat([
    seconds ? field(1, 0, seconds) : Buffer.alloc(0),
    nanos ? field(2, 0, nanos) : Buffer.alloc(0),
  ]);
  const retryInfo = field(1, 2, duration);
  const any = Buffer.concat([
    field(1, 2, Buffer.from('type.googleapis.com/google.rpc.RetryInfo')),
    field(2, 2, retryInfo),
  ]);
  return Buffer.concat([field(1, 0, code), field(2, 2, Buffer.from(message)), field(3, 2, any)]);
}

/** The grpc-js error for a DemoError; a retry hint travels as google.rpc.RetryInfo. */
function toServiceError(err) {
  const code = grpc.status[err.code];
  const serviceError = { code, details: err.details };
  if (err.retryAfterMs > 0) {
    const metadata = new grpc.Metadata();
    metadata.set(
      'grpc-status-details-bin',
      statusWithRetryInfo(code, err.details, err.retryAfterMs),
    );
    serviceError.metadata = metadata;
  }
  return serviceError;
}

/** shop.control.v1.Control handlers over a ControlPlane; `onReset` restores the demo data. */
function controlHandlers(plane, onReset) {
  return {
    AddFault(call, callback) {
      try {
        plane.addFault(makeRule(call.request));
      } catch (err) {
        callback(toServiceError(err));
        return;
      }
      callback(null, {});
    },
    Reset(call, callback) {
      plane.reset();
      if (onReset) onReset();
      callback(null, {});
    },
    ListCalls(call, callback) {
      callback(null, { calls: plane.calls() });
    },
  };
}

module.exports = { ControlPlane, DemoError, controlHandlers, makeRule, selectMetadata };
