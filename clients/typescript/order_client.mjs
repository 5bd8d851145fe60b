#!/usr/bin/env node
// Create, get and watch one order through the ordermesh gateway over grpc-web.
//
// Plain JavaScript (Node 20+, no compile step) on Connect's grpc-web transport
// and the messages protoc-gen-es generates into ./gen (target=js+dts, see
// proto/buf.gen.js.yaml). From the repository root:
//
//     npm ci --prefix clients/typescript
//     buf generate proto --template proto/buf.gen.js.yaml
//     node clients/typescript/order_client.mjs --base-url http://127.0.0.1:8080 \
//         --token "$(ordermesh token)"
//
// Prints one JSON object per line: `created`, `got`, one `watched` per status
// the stream reports, then `done` (or `error`, with the Connect code name and
// message). Exit status: 0 when the order reached a terminal status (and
// --expect, if given, matched), 1 on an RPC error, 2 on bad arguments, 3 when
// the final status is not the expected one.

import { randomUUID } from "node:crypto";
import { parseArgs } from "node:util";

import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createGrpcWebTransport } from "@connectrpc/connect-node";

let generated;
try {
  generated = await import("./gen/ordermesh/order/v1/order_pb.js");
} catch (error) {
  console.error(
    "order_client: generate the client first (from the repository root): " +
      "buf generate proto --template proto/buf.gen.js.yaml\n" +
      String(error),
  );
  process.exit(2);
}
const { OrderService, OrderStatus, OrderStatusSchema, RejectReasonSchema } = generated;

const TERMINAL = new Set([OrderStatus.CONFIRMED, OrderStatus.REJECTED, OrderStatus.CANCELLED]);

function emit(step, fields) {
  console.log(JSON.stringify({ step, ...fields }));
}

// The proto name of an enum value, e.g. ORDER_STATUS_CONFIRMED.
function enumName(schema, number) {
  return schema.value[number]?.name ?? String(number);
}

function describe(order) {
  const described = {
    order_id: order.orderId,
    status: enumName(OrderStatusSchema, order.status),
  };
  if (order.total) {
    described.total = {
      amount_minor: Number(order.total.amountMinor),
      currency_code: order.total.currencyCode,
    };
  }
  if (order.rejectReason) {
    described.reject_reason = enumName(RejectReasonSchema, order.rejectReason);
  }
  return described;
}

async function run(args) {
  // Every call through the gateway carries the bearer token.
  const authorize = (next) => async (request) => {
    if (args.token) {
      request.header.set("Authorization", `Bearer ${args.token}`);
    }
    return next(request);
  };
  const transport = createGrpcWebTransport({
    baseUrl: args["base-url"],
    httpVersion: "1.1",
    interceptors: [authorize],
  });
  const orders = createClient(OrderService, transport);
  const timeoutMs = Number(args.timeout) * 1000;

  const { order: created } = await orders.createOrder(
    {
      requestId: args["request-id"] ?? `typescript-${randomUUID()}`,
      customerId: args.customer,
      lines: [{ sku: args.sku, quantity: BigInt(args.quantity) }],
    },
    { timeoutMs },
  );
  emit("created", describe(created));

  const { order: got } = await orders.getOrder({ orderId: created.orderId }, { timeoutMs });
  emit("got", describe(got));

  // Server streaming over grpc-web: the order now and after every change.
  let last = got;
  for await (const update of orders.watchOrder({ orderId: created.orderId }, { timeoutMs })) {
    last = update.order;
    emit("watched", describe(last));
  }

  const final = enumName(OrderStatusSchema, last.status);
  emit("done", describe(last));
  if (!TERMINAL.has(last.status)) {
    console.error(`order_client: the stream ended at non-terminal ${final}`);
    return 3;
  }
  if (args.expect && final !== args.expect) {
    console.error(`order_client: expected ${args.expect}, got ${final}`);
    return 3;
  }
  return 0;
}

async function main() {
  let args;
  try {
    ({ values: args } = parseArgs({
      options: {
        "base-url": { type: "string", default: "http://127.0.0.1:8080" },
        token: { type: "string" },
        customer: { type: "string", default: "alice" },
        sku: { type: "string", default: "KB-001" },
        quantity: { type: "string", default: "1" },
        "request-id": { type: "string" },
        expect: { type: "string" },
        timeout: { type: "string", default: "30" },
      },
    }));
  } catch (error) {
    console.error(`order_client: ${error.message}`);
    return 2;
  }
  try {
    return await run(args);
  } catch (error) {
    const failure = ConnectError.from(error);
    emit("error", { code: Code[failure.code], message: failure.rawMessage });
    return 1;
  }
}

process.exitCode = await main();
