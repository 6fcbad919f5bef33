"""Crash-loop bisection: a batch that kills the process (a crash in a native library, the OOM
killer) must not stop ingestion for good. The evidence lives in Kafka, beside the offset it is
about, so it follows the partition to whichever consumer takes it over: on every assignment the
consumer commits the offset it resumes from again, with ``resumes`` raised by one in the commit's
metadata; a batch that commits past it clears the count. Resuming twice from the same offset means
the batch starting there crashed twice: from then on the first batch of that partition is capped
to half the previous cap at every further crash, and a single message that still crashes is
dead-lettered (``crashed_consumer``) without being read.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace


@dataclass(frozen=True)
class Resume:
    """What a partition's committed metadata says about its committed offset."""

    resumes: int = 0
    """Times a consumer resumed from this offset without committing past it."""
    cap: int | None = None
    """The batch cap in force while bisecting."""
    until: int | None = None
    """Bisection ends once the committed offset passes the window that crashed."""

    def dumps(self) -> str:
        if self == Resume():
            return ""
        return json.dumps({k: v for k, v in self.__dict__.items() if v is not None}, separators=(",", ":"))

    @classmethod
    def loads(cls, metadata: str | None) -> Resume:
        """Anything unreadable (another tool's metadata) counts as no evidence."""
        try:
            raw = json.loads(metadata) if metadata else {}
            return cls(int(raw.get("resumes", 0)), _opt_int(raw.get("cap")), _opt_int(raw.get("until")))
        except (ValueError, TypeError, AttributeError):
            return cls()


def _opt_int(value) -> int | None:
    return None if value is None else int(value)


@dataclass(frozen=True)
class Plan:
    marker: Resume
    """Committed at the resume offset before anything is read."""
    cap: int | None
    """At most this many messages of the partition in its next batch."""
    poison: bool
    """The message at the resume offset crashed the process alone: dead-letter it unread."""


def plan(evidence: Resume, offset: int, batch_size: int) -> Plan:
    """What to do on resuming a partition at ``offset``, given what its metadata says."""
    marker = replace(evidence, resumes=evidence.resumes + 1)
    if evidence.resumes == 0:
        return Plan(marker, evidence.cap, False)  # no crash here (maybe still bisecting)
    if evidence.cap is None:
        if evidence.resumes == 1:
            return Plan(marker, None, False)  # crashed once: could be anything, try again as it was
        cap = max(1, batch_size // 2)
        return Plan(replace(marker, cap=cap, until=offset + batch_size), cap, False)
    if evidence.cap <= 1:
        return Plan(marker, 1, True)
    cap = evidence.cap // 2
    return Plan(replace(marker, cap=cap), cap, False)


def after_commit(bisecting: Resume | None, next_offset: int) -> Resume | None:
    """The bisection state a commit up to ``next_offset`` carries on, or None once it is over."""
    if bisecting is None or bisecting.until is None or next_offset > bisecting.until:
        return None
    return Resume(0, bisecting.cap, bisecting.until)
