#!/usr/bin/env python3
"""An OTLP/gRPC trace receiver that only counts: what bench/telemetry.sh
exports traces to, so the exporter's whole cost (spans, batching,
serialization, the gRPC send) is paid by the process under test and none of
a real collector's work is added to the machine.

    otlp_sink.py PORT COUNT_FILE   # writes the spans received so far, once a second
"""
import sys
import threading
import time
from concurrent import futures

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc


class Sink(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self):
        self.spans = 0
        self.lock = threading.Lock()

    def Export(self, request, context):
        n = sum(len(scope.spans) for rs in request.resource_spans for scope in rs.scope_spans)
        with self.lock:
            self.spans += n
        return trace_service_pb2.ExportTraceServiceResponse()


def main():
    port, out = int(sys.argv[1]), sys.argv[2]
    sink = Sink()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(sink, server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    while True:
        with sink.lock:
            count = sink.spans
        with open(out, "w") as f:
            f.write(f"{count}\n")
        time.sleep(1)


if __name__ == "__main__":
    main()
