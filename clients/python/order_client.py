#!/usr/bin/env python3
"""Create, get and watch one order through ordermesh's gRPC API.

A client generated from proto/ by grpcio-tools, talking native gRPC to any
address that serves ordermesh.order.v1.OrderService: the order service itself
(`ordermesh up`: 127.0.0.1:50051) or the gateway (port 8080, with --token).

Generate the client, then run this script with it on PYTHONPATH:

    pip install grpcio-tools grpcio-status
    mkdir -p target/clients/python
    python -m grpc_tools.protoc -Iproto --python_out=target/clients/python \
        --pyi_out=target/clients/python --grpc_python_out=target/clients/python \
        $(find proto/ordermesh -name '*.proto')
    PYTHONPATH=target/clients/python python clients/python/order_client.py --target 127.0.0.1:50051

`google.api` and `google.rpc` come from googleapis-common-protos (installed
with grpcio-status), so only proto/ordermesh is generated.

Prints one JSON object per line: `created`, `got`, one `watched` per status
the stream reports, then `done` (or `error`, with the gRPC code, message and
any google.rpc.BadRequest field violations). Exit status: 0 when the order
reached a terminal status (and --expect, if given, matched), 1 on a gRPC
error, 3 when the final status is not the expected one.
"""

import argparse
import json
import sys
import uuid

import grpc
from grpc_status import rpc_status
from google.rpc import error_details_pb2

from ordermesh.order.v1 import order_pb2, order_pb2_grpc

TERMINAL = {
    order_pb2.ORDER_STATUS_CONFIRMED,
    order_pb2.ORDER_STATUS_REJECTED,
    order_pb2.ORDER_STATUS_CANCELLED,
}


def emit(step, **fields):
    print(json.dumps({"step": step, **fields}), flush=True)


def describe(order):
    described = {
        "order_id": order.order_id,
        "status": order_pb2.OrderStatus.Name(order.status),
    }
    if order.HasField("total"):
        described["total"] = {
            "amount_minor": order.total.amount_minor,
            "currency_code": order.total.currency_code,
        }
    if order.reject_reason:
        described["reject_reason"] = order_pb2.RejectReason.Name(order.reject_reason)
    return described


def report_error(error):
    """Prints a gRPC error with its code and, when the server sent them, the
    field violations of a google.rpc.BadRequest detail."""
    violations = []
    status = rpc_status.from_call(error)
    if status is not None:
        for detail in status.details:
            if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                bad_request = error_details_pb2.BadRequest()
                detail.Unpack(bad_request)
                violations.extend(
                    {"field": v.field, "description": v.description}
                    for v in bad_request.field_violations
                )
    emit(
        "error",
        code=error.code().name,
        message=error.details(),
        field_violations=violations,
    )


def run(args):
    metadata = []
    if args.token:
        metadata.append(("authorization", f"Bearer {args.token}"))
    with grpc.insecure_channel(args.target) as channel:
        orders = order_pb2_grpc.OrderServiceStub(channel)
        request = order_pb2.CreateOrderRequest(
            request_id=args.request_id or f"python-{uuid.uuid4()}",
            customer_id=args.customer,
            lines=[order_pb2.CreateOrderLine(sku=args.sku, quantity=args.quantity)],
        )
        created = orders.CreateOrder(request, timeout=args.timeout, metadata=metadata).order
        emit("created", **describe(created))

        got = orders.GetOrder(
            order_pb2.GetOrderRequest(order_id=created.order_id),
            timeout=args.timeout,
            metadata=metadata,
        ).order
        emit("got", **describe(got))

        last = got
        for update in orders.WatchOrder(
            order_pb2.WatchOrderRequest(order_id=created.order_id),
            timeout=args.timeout,
            metadata=metadata,
        ):
            last = update.order
            emit("watched", **describe(last))

    final = order_pb2.OrderStatus.Name(last.status)
    emit("done", **describe(last))
    if last.status not in TERMINAL:
        print(f"order_client: the stream ended at non-terminal {final}", file=sys.stderr)
        return 3
    if args.expect and final != args.expect:
        print(f"order_client: expected {args.expect}, got {final}", file=sys.stderr)
        return 3
    return 0


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", required=True, help="host:port serving OrderService (order service or gateway)")
    parser.add_argument("--token", help="bearer token (the gateway requires one)")
    parser.add_argument("--customer", default="alice")
    parser.add_argument("--sku", default="KB-001")
    parser.add_argument("--quantity", type=int, default=1)
    parser.add_argument("--request-id", help="idempotency key (default: a new UUID)")
    parser.add_argument("--expect", help="final status required for exit 0, e.g. ORDER_STATUS_CONFIRMED")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds per call (the watch included)")
    args = parser.parse_args()
    try:
        return run(args)
    except grpc.RpcError as error:
        report_error(error)
        return 1


if __name__ == "__main__":
    sys.exit(main())
