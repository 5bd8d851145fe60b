// An ordermesh REST client whose types are generated from the gateway's
// /openapi.json (openapi-typescript) and whose requests go through
// openapi-fetch: it places an order with a bearer token, follows it until
// the saga ends, and reads its composed details. Each step prints one JSON
// line, so a script (or a test) can read what happened.
//
//   npm ci && curl -s http://127.0.0.1:8080/openapi.json > gen/openapi.json
//   npm run generate && npm run build
//   node dist/order_client.js --base http://127.0.0.1:8080 --token "$(ordermesh token)"
import createClient from "openapi-fetch";
import type { paths } from "./gen/ordermesh.js";

function arg(name: string, fallback?: string): string {
  const at = process.argv.indexOf(`--${name}`);
  const value = at >= 0 ? process.argv[at + 1] : fallback;
  if (value === undefined) {
    throw new Error(`--${name} is required`);
  }
  return value;
}

const base = arg("base", "http://127.0.0.1:8080");
const token = arg("token", "");
const sku = arg("sku", "KB-001");

const client = createClient<paths>({
  baseUrl: base,
  headers: token ? { Authorization: `Bearer ${token}` } : {},
});

function step(name: string, value: unknown): void {
  console.log(JSON.stringify({ step: name, ...(value as object) }));
}

function fail(response: Response, error: unknown): never {
  step("error", { status: response.status, error });
  process.exit(1);
}

const created = await client.POST("/v1/orders", {
  body: {
    requestId: `openapi-${Date.now()}-${Math.random().toString(36).slice(2)}`,
    customerId: "alice",
    lines: [{ sku, quantity: "1" }],
  },
});
if (created.data === undefined) {
  fail(created.response, created.error);
}
const orderId = created.data.order?.orderId ?? "";
step("created", { orderId, status: created.data.order?.status });

let status = created.data.order?.status;
for (let attempt = 0; attempt < 100 && status === "ORDER_STATUS_PENDING"; attempt++) {
  await new Promise((resolve) => setTimeout(resolve, 100));
  const got = await client.GET("/v1/orders/{order_id}", {
    params: { path: { order_id: orderId } },
  });
  if (got.data === undefined) {
    fail(got.response, got.error);
  }
  status = got.data.order?.status;
}
step("ended", { orderId, status });

const details = await client.GET("/v1/orders/{order_id}/details", {
  params: { path: { order_id: orderId } },
});
if (details.data === undefined) {
  fail(details.response, details.error);
}
step("details", {
  orderId: details.data.order?.orderId,
  payment: details.data.payment?.status ?? null,
  reservation: details.data.reservation?.status ?? null,
  partial: details.data.partial,
});
