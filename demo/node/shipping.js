#!/usr/bin/env node
// Demo shipping service: shop.v1.Shipping on Node.js (@grpc/grpc-js), with the
// shop.control.v1.Control plane and server reflection (@grpc/reflection, v1 and v1alpha).
//
//   node demo/node/shipping.js [--host H] [--port N]     (default 127.0.0.1:50053)
//
// The protos are loaded at runtime from ../../proto. Prints "ready shipping HOST:PORT" on stdout
// once serving; exits 0 on SIGTERM/SIGINT.
//
// Behaviour: CreateShipment → shp-<n> with a tracking number (carrier "DEMO-POST"); an empty
// address is INVALID_ARGUMENT. CancelShipment → cancelled true (false when it already was);
// an unknown shipment is NOT_FOUND. Control.Reset also forgets every shipment.
'use strict';

const path = require('node:path');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');
const { ReflectionService } = require('@grpc/reflection');
const { HealthImplementation } = require('grpc-health-check');
const { ControlPlane, DemoError, controlHandlers } = require('./control');

const PROTO_ROOT = path.resolve(__dirname, '..', '..', 'proto');
const DEFAULT_PORT = 50053;

function parseArgs(argv) {
  const args = { host: '127.0.0.1', port: DEFAULT_PORT };
  for (let i = 0; i < argv.length; i += 1) {
    const [flag, inline] = argv[i].split('=', 2);
    const value = inline !== undefined ? inline : argv[++i];
    if (flag === '--host' && value) args.host = value;
    else if (flag === '--port' && /^\d+$/.test(value || '')) args.port = Number(value);
    else {
      process.stderr.write(`usage: shipping.js [--host H] [--port N]; bad argument ${argv[i]}\n`);
      process.exit(2);
    }
  }
  return args;
}

/** Shipments booked by this process. */
class Shipments {
  constructor() {
    this.nextId = 1;
    this.byId = new Map();
  }

  restore() {
    this.byId.clear();
  }

  create(request) {
    if (!(request.address || '').trim()) {
      throw new DemoError('INVALID_ARGUMENT', 'address must not be empty');
    }
    const n = this.nextId;
    this.nextId += 1;
    const shipment = {
      id: `shp-${n}`,
      tracking_number: `DP${String(n).padStart(9, '0')}`,
      carrier: 'DEMO-POST',
    };
    this.byId.set(shipment.id, { shipment, cancelled: false });
    return shipment;
  }

  cancel(request) {
    const entry = this.byId.get(request.shipment_id || '');
    if (entry === undefined) {
      throw new DemoError('NOT_FOUND', `unknown shipment '${request.shipment_id || ''}'`);
    }
    const cancelled = !entry.cancelled;
    entry.cancelled = true;
    return { cancelled };
  }
}

function main() {
  const args = parseArgs(process.argv.slice(2));
  const definition = protoLoader.loadSync(
    ['shop/v1/shipping.proto', 'shop/control/v1/control.proto'],
    // defaults: false keeps unset fields out of the recorded request JSON (as proto3 JSON does).
    { includeDirs: [PROTO_ROOT], keepCase: true, longs: String, enums: String, defaults: false },
  );
  const proto = grpc.loadPackageDefinition(definition);
  const shipments = new Shipments();
  const plane = new ControlPlane();

  const server = new grpc.Server();
  server.addService(proto.shop.v1.Shipping.service, {
    CreateShipment(call, callback) {
      plane.handleUnary('CreateShipment', call, callback, (req) => shipments.create(req));
    },
    CancelShipment(call, callback) {
      plane.handleUnary('CancelShipment', call, callback, (req) => shipments.cancel(req));
    },
  });
  server.addService(
    proto.shop.control.v1.Control.service,
    controlHandlers(plane, () => shipments.restore()),
  );
  new ReflectionService(definition).addToServer(server);
  // grpc.health.v1, as the Python services answer it: the server ("") and its business service.
  new HealthImplementation({ '': 'SERVING', 'shop.v1.Shipping': 'SERVING' }).addToServer(server);

  server.bindAsync(
    `${args.host}:${args.port}`,
    grpc.ServerCredentials.createInsecure(),
    (err, port) => {
      if (err) {
        process.stderr.write(`shipping: cannot bind ${args.host}:${args.port}: ${err.message}\n`);
        process.exit(1);
      }
      process.stdout.write(`ready shipping ${args.host}:${port}\n`);
    },
  );

  const stop = () => {
    const force = setTimeout(() => {
      server.forceShutdown();
      process.exit(0);
    }, 1000);
    server.tryShutdown(() => {
      clearTimeout(force);
      process.exit(0);
    });
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

main();
