#!/usr/bin/env node
// Many concurrent Run calls on ONE @grpc/grpc-js client (one HTTP/2 connection), to see how
// grpc-js treats the gateway's SETTINGS_MAX_CONCURRENT_STREAMS (--max-streams-per-connection).
//
//   node tests/node/burst.js --address 127.0.0.1:50050 --workflow hold --count 200 \
//        --input '{"order_id": "burst"}' [--deadline-ms 30000]
//
// Output: one JSON object on stdout counting the outcomes by status name, e.g. {"OK": 200}, or
// {"UNAVAILABLE: …details…": 3, "OK": 197}. Exit status 0 when every call succeeded, 1 when
// some failed, 100 for a usage error.
'use strict';

const path = require('node:path');
const { parseArgs } = require('node:util');

const MODULES = path.resolve(__dirname, '..', '..', 'demo', 'node', 'node_modules');
const grpc = require(path.join(MODULES, '@grpc', 'grpc-js'));
const protoLoader = require(path.join(MODULES, '@grpc', 'proto-loader'));

const PROTO_ROOT = path.resolve(__dirname, '..', '..', 'proto');
const USAGE = 100;

function toValue(value) {
  if (value === null) return { nullValue: 'NULL_VALUE' };
  if (Array.isArray(value)) return { listValue: { values: value.map(toValue) } };
  switch (typeof value) {
    case 'number': return { numberValue: value };
    case 'string': return { stringValue: value };
    case 'boolean': return { boolValue: value };
    default: return { structValue: toStruct(value) };
  }
}

function toStruct(object) {
  const fields = {};
  for (const [key, value] of Object.entries(object)) fields[key] = toValue(value);
  return { fields };
}

function main() {
  let args;
  try {
    args = parseArgs({
      options: {
        address: { type: 'string' },
        workflow: { type: 'string' },
        input: { type: 'string', default: '{}' },
        count: { type: 'string', default: '200' },
        'deadline-ms': { type: 'string', default: '30000' },
      },
    }).values;
  } catch (err) {
    console.error(String(err));
    process.exit(USAGE);
  }
  if (!args.address || !args.workflow) {
    console.error('usage: burst.js --address HOST:PORT --workflow NAME [--count N] [--input JSON]');
    process.exit(USAGE);
  }
  const definition = protoLoader.loadSync('maestro/v1/gateway.proto', {
    includeDirs: [PROTO_ROOT], keepCase: true, defaults: true, oneofs: true,
  });
  const Gateway = grpc.loadPackageDefinition(definition).maestro.v1.Gateway;
  const client = new Gateway(args.address, grpc.credentials.createInsecure());
  const count = Number(args.count);
  const deadlineMs = Number(args['deadline-ms']);
  const input = JSON.parse(args.input);
  const outcomes = {};
  let finished = 0;
  for (let i = 0; i < count; i++) {
    const request = { workflow: args.workflow, input: toStruct({ ...input, n: i }) };
    client.Run(request, { deadline: Date.now() + deadlineMs }, (err) => {
      const key = err ? `${grpc.status[err.code]}: ${err.details}` : 'OK';
      outcomes[key] = (outcomes[key] || 0) + 1;
      finished += 1;
      if (finished === count) {
        client.close();
        console.log(JSON.stringify(outcomes));
        process.exit(outcomes.OK === count ? 0 : 1);
      }
    });
  }
}

main();
