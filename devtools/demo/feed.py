"""The feed through Kafka: the generated events, a few bad ones that must end in the DLQ, and the
consumer run until the topic is drained, watched so that a store retrying forever cannot hang
the demo."""

from __future__ import annotations

import threading
import time
from collections import Counter
from typing import TYPE_CHECKING

from rich.console import Console

from devtools.demo.report import DemoOptions
from devtools.demo.steps import progress_bar
from feedstore.settings import Settings

if TYPE_CHECKING:
    from devtools.synthetic.generator import GenerationSpec
    from ingestion.consumer import IngestConsumer


def generate_feed(spec: GenerationSpec, settings: Settings, console: Console) -> dict[str, int]:
    from devtools.synthetic.seeding import RichProgress, generate

    with progress_bar(console) as progress:
        report = generate(spec, settings, events_to="kafka", progress=RichProgress(progress))
    return dict(report.rows)


def send_bad_events(spec: GenerationSpec, settings: Settings, sample: int = 60) -> Counter:
    """Malformed and invalid events (one of each kind the validator knows, but the 10 MB one)
    plus re-sent duplicates, derived from real generated events; returns how many of each
    reason were sent (``duplicate`` ones are stored once, the rest go to the DLQ)."""
    from devtools.synthetic import generator as gen
    from devtools.synthetic.defects import inject_defects
    from feedstore.contract.rules import REPLAY_MAX_EVENT_AGE_SECONDS, Reason
    from ingestion.producer import ProducerError, key_for_line, make_producer, send

    first_day = next(gen.iter_event_chunks(spec)).slice(0, sample)
    lines = gen.event_json(first_day).to_pylist()
    mixed, reasons = inject_defects(lines, copies=1, duplicates=5, max_age_seconds=REPLAY_MAX_EVENT_AGE_SECONDS,
                                    seed=spec.seed)
    bad = [(line, r) for line, r in zip(mixed, reasons, strict=True) if r is not None and r is not Reason.TOO_LARGE]
    report = send(make_producer(settings), settings.kafka.topic_activity, ((key_for_line(x), x) for x, _ in bad))
    if not report.ok:
        raise ProducerError(f"{report.failed} of {report.sent} bad events not delivered: {dict(report.errors)}")
    return Counter(str(r) for _, r in bad)


def ingest(settings: Settings, expected: int, options: DemoOptions, console: Console) -> dict[str, int]:
    """The consumer in replay mode (the feed spans days) with the Feast push on, until drained."""
    from ingestion.consumer import IngestConsumer, Options

    consumer = IngestConsumer(settings.replace(ingest={"feast_push": True}),
                              Options(until_idle=options.idle_seconds, replay=True))
    thread, failure = _start(consumer)
    try:
        _follow(consumer, thread, expected, options.stall_seconds, console)
    except KeyboardInterrupt:
        _halt(consumer, thread)
        raise
    if failure:
        raise failure[0]
    s = consumer.stats
    if s.messages < expected:
        raise RuntimeError(f"the consumer stopped after {s.messages} of {expected} messages")
    return {"messages": s.messages, "stored": s.stored, "duplicates": s.duplicates, "rejected": s.rejected,
            "batches": s.batches}


def _start(consumer: IngestConsumer) -> tuple[threading.Thread, list[BaseException]]:
    """The consumer in a thread of its own, so that this one can show progress and notice a
    stall; what the consumer raises is kept for this thread to raise."""
    failure: list[BaseException] = []

    def run() -> None:
        try:
            consumer.run()
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread
            failure.append(exc)

    thread = threading.Thread(target=run, name="demo-ingest", daemon=True)
    thread.start()
    return thread, failure


def _follow(consumer: IngestConsumer, thread: threading.Thread, expected: int, stall_seconds: float,
            console: Console) -> None:
    """Until the consumer's thread ends; a count that stops moving means a store is retrying
    (the consumer never gives up on one), so the demo does."""
    last, moved = -1, time.monotonic()
    with progress_bar(console) as progress:
        task = progress.add_task("messages consumed", total=expected)
        while thread.is_alive():
            thread.join(0.25)
            done = consumer.stats.messages
            progress.update(task, completed=done)
            if done != last:
                last, moved = done, time.monotonic()
            elif time.monotonic() - moved > stall_seconds:
                _halt(consumer, thread)
                raise RuntimeError(f"ingestion stalled at {done} of {expected} messages for "
                                   f"{stall_seconds:.0f}s (a store retrying? see this log)")


def _halt(consumer: IngestConsumer, thread: threading.Thread) -> None:
    consumer.stop()
    thread.join(30)
