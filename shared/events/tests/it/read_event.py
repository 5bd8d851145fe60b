"""Reads ordermesh events with nats-py, a client no one on the project wrote.

Prints two JSON lines: the first message of the ORDERS stream read directly,
and the same event through a durable pull consumer (acked). Usage:
    python read_event.py nats://127.0.0.1:PORT
"""
import asyncio
import json
import sys

import nats


def as_json(subject, headers, data):
    return json.dumps({"subject": subject, "headers": dict(headers or {}), "data": data.hex()})


async def main(url):
    nc = await nats.connect(url)
    js = nc.jetstream()
    raw = await js.get_msg("ORDERS", 1)
    print(as_json(raw.subject, raw.headers, raw.data), flush=True)
    sub = await js.pull_subscribe("ordermesh.orders.v1.>", durable="python")
    msgs = await sub.fetch(1, timeout=10)
    msg = msgs[0]
    await msg.ack()
    print(as_json(msg.subject, msg.headers, msg.data), flush=True)
    await nc.close()


asyncio.run(main(sys.argv[1]))
