#!/usr/bin/env node
// A Node.js client of the maestro-gateway API, built at runtime from proto/maestro/v1/gateway.proto
// with @grpc/grpc-js and @grpc/proto-loader (the packages installed once in demo/node by
// `make node`; no second npm install).
//
//   node tests/node/client.js --address 127.0.0.1:50050 --workflow checkout \
//        --input '{"order_id": "A-1", ...}' [--rpc execute|run] [--deadline-ms N]
//        [--execution-id ID] [--label k=v]...
//
// Output, one JSON object per line on stdout:
//   execute: {"event": {...}} per event as it arrives (`kind` names the oneof case;
//            google.protobuf.Value/Struct fields as plain JSON), then {"status": {...}}
//   run:     {"result": {...}} when the call succeeded, then {"status": {...}}
// where status is {"code": 3, "name": "INVALID_ARGUMENT", "details": "...", "error_info":
// {"reason", "domain", "metadata"} | null}. Exit status: the gRPC status code (0 for OK), or 100
// for a usage error.
'use strict';

const path = require('node:path');
const { parseArgs } = require('node:util');

const MODULES = path.resolve(__dirname, '..', '..', 'demo', 'node', 'node_modules');
const grpc = require(path.join(MODULES, '@grpc', 'grpc-js'));
const protoLoader = require(path.join(MODULES, '@grpc', 'proto-loader'));
const protobuf = require(path.join(MODULES, 'protobufjs'));

const PROTO_ROOT = path.resolve(__dirname, '..', '..', 'proto');
const USAGE = 100;

// google.rpc.Status and ErrorInfo, the only fields the client reads from grpc-status-details-bin.
const RICH = protobuf.parse(`
  syntax = "proto3";
  package google.rpc;
  message Any { string type_url = 1; bytes value = 2; }
  message Status { int32 code = 1; string message = 2; repeated Any details = 3; }
  message ErrorInfo { string reason = 1; string domain = 2; map<string, string> metadata = 3; }
`, { keepCase: true }).root;
const ERROR_INFO_URL = 'type.googleapis.com/google.rpc.ErrorInfo';

function loadGateway() {
  const definition = protoLoader.loadSync('maestro/v1/gateway.proto', {
    includeDirs: [PROTO_ROOT],
    keepCase: true,
    longs: String,
    enums: String,
    defaults: true,
    oneofs: true,
  });
  return grpc.loadPackageDefinition(definition).maestro.v1.Gateway;
}

// google.protobuf.Value as proto-loader decodes it ({kind: 'numberValue', numberValue: 2}) → 2.
function fromValue(value) {
  if (value === null || value === undefined) return null;
  switch (value.kind) {
    case 'nullValue': return null;
    case 'numberValue': return value.numberValue;
    case 'stringValue': return value.stringValue;
    case 'boolValue': return value.boolValue;
    case 'structValue': return fromStruct(value.structValue);
    case 'listValue': return (value.listValue.values || []).map(fromValue);
    default: return null;
  }
}

function fromStruct(struct) {
  const out = {};
  for (const [key, value] of Object.entries((struct && struct.fields) || {})) {
    out[key] = fromValue(value);
  }
  return out;
}

function toValue(value) {
  if (value === null || value === undefined) return { nullValue: 'NULL_VALUE' };
  if (typeof value === 'number') return { numberValue: value };
  if (typeof value === 'string') return { stringValue: value };
  if (typeof value === 'boolean') return { boolValue: value };
  if (Array.isArray(value)) return { listValue: { values: value.map(toValue) } };
  return { structValue: toStruct(value) };
}

function toStruct(object) {
  const fields = {};
  for (const [key, value] of Object.entries(object)) fields[key] = toValue(value);
  return { fields };
}

const TIMESTAMPS = new Set(['time', 'start_time']);

function timestamp(value) {
  return new Date(Number(value.seconds) * 1000 + value.nanos / 1e6).toISOString();
}

// Durations and timestamps as proto3 JSON writes them ("0.012s", RFC 3339); Values as plain JSON.
function plain(message, key = '') {
  if (Array.isArray(message)) return message.map((item) => plain(item));
  if (message === null || typeof message !== 'object' || Buffer.isBuffer(message)) return message;
  const keys = Object.keys(message);
  if (keys.includes('kind') && keys.some((k) => k.endsWith('Value'))) return fromValue(message);
  if (keys.length === 2 && keys.includes('seconds') && keys.includes('nanos')) {
    if (TIMESTAMPS.has(key)) return timestamp(message);
    return `${(Number(message.seconds) + message.nanos / 1e9).toFixed(9).replace(/\.?0+$/, '')}s`;
  }
  const out = {};
  for (const name of keys) out[name] = plain(message[name], name);
  return out;
}

function eventJson(event) {
  const kind = event.event;
  return {
    execution_id: event.execution_id,
    sequence: event.sequence,
    time: event.time ? timestamp(event.time) : null,
    kind,
    [kind]: plain(event[kind]),
  };
}

function errorInfo(metadata) {
  const raw = metadata && metadata.get('grpc-status-details-bin');
  if (!raw || raw.length === 0) return null;
  const status = RICH.lookupType('google.rpc.Status').decode(raw[0]);
  for (const detail of status.details) {
    if (detail.type_url === ERROR_INFO_URL) {
      const info = RICH.lookupType('google.rpc.ErrorInfo').decode(detail.value);
      return { reason: info.reason, domain: info.domain, metadata: { ...info.metadata } };
    }
  }
  return null;
}

function statusJson(status) {
  return {
    code: status.code,
    name: Object.keys(grpc.status).find((name) => grpc.status[name] === status.code) || 'UNKNOWN',
    details: status.details,
    error_info: status.code === grpc.status.OK ? null : errorInfo(status.metadata),
  };
}

function print(object) {
  process.stdout.write(`${JSON.stringify(object)}\n`);
}

function parse(argv) {
  const { values } = parseArgs({
    args: argv,
    options: {
      address: { type: 'string' },
      workflow: { type: 'string' },
      input: { type: 'string', default: '{}' },
      rpc: { type: 'string', default: 'execute' },
      'deadline-ms': { type: 'string' },
      'execution-id': { type: 'string', default: '' },
      label: { type: 'string', multiple: true, default: [] },
    },
  });
  if (!values.address || !values.workflow || !['execute', 'run'].includes(values.rpc)) {
    throw new Error('usage: client.js --address H:P --workflow NAME [--input JSON] [--rpc execute|run]');
  }
  const labels = {};
  for (const label of values.label) {
    const at = label.indexOf('=');
    if (at < 1) throw new Error(`--label ${label}: expected key=value`);
    labels[label.slice(0, at)] = label.slice(at + 1);
  }
  return { ...values, input: JSON.parse(values.input), labels };
}

function main() {
  let args;
  try {
    args = parse(process.argv.slice(2));
  } catch (error) {
    process.stderr.write(`${error.message}\n`);
    process.exit(USAGE);
  }
  const Gateway = loadGateway();
  const client = new Gateway(args.address, grpc.credentials.createInsecure());
  const request = {
    workflow: args.workflow,
    input: toStruct(args.input),
    execution_id: args['execution-id'],
    labels: args.labels,
  };
  const options = {};
  if (args['deadline-ms'] !== undefined) {
    options.deadline = new Date(Date.now() + Number(args['deadline-ms']));
  }
  const finish = (status) => {
    print({ status: statusJson(status) });
    client.close();
    process.exitCode = status.code;
  };
  if (args.rpc === 'run') {
    const call = client.Run(request, new grpc.Metadata(), options, (error, result) => {
      if (!error) print({ result: plain(result) });
    });
    call.on('status', finish);
    return;
  }
  const call = client.Execute(request, new grpc.Metadata(), options);
  call.on('data', (event) => print({ event: eventJson(event) }));
  // The stream's error is reported through 'status' (after every 'data'); keep it from throwing.
  call.on('error', () => {});
  call.on('status', finish);
}

main();
