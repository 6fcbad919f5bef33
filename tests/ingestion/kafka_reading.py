"""Reading back exactly what a test wrote: messages between offsets taken before and after."""

from __future__ import annotations

import time
import uuid

from confluent_kafka import Consumer, Message, TopicPartition


def high_watermarks(bootstrap: str, topic: str) -> dict[int, int]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"test-{uuid.uuid4().hex}"})
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        return {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in partitions}
    finally:
        consumer.close()


def read_between(bootstrap: str, topic: str, start: dict[int, int], end: dict[int, int],
                 timeout: float = 60) -> dict[int, list[Message]]:
    """Messages of each partition from ``start`` up to ``end`` (exclusive), in offset order."""
    wanted = {p: end[p] - start.get(p, 0) for p in end}
    out: dict[int, list[Message]] = {p: [] for p in end}
    consumer = Consumer({
        "bootstrap.servers": bootstrap, "group.id": f"test-{uuid.uuid4().hex}", "enable.auto.commit": False,
        "fetch.message.max.bytes": 32 * 1024 * 1024, "max.partition.fetch.bytes": 32 * 1024 * 1024,
    })
    try:
        consumer.assign([TopicPartition(topic, p, start.get(p, 0)) for p in end if wanted[p]])
        deadline = time.monotonic() + timeout
        while any(len(out[p]) < wanted[p] for p in end) and time.monotonic() < deadline:
            for msg in consumer.consume(1000, timeout=1):
                if msg.error() is None and msg.offset() < end[msg.partition()]:
                    out[msg.partition()].append(msg)
    finally:
        consumer.close()
    return out
