"""When a schedule ticks: a cron expression (``croniter``, UTC) or a fixed interval.

Forms accepted everywhere (workflow schedules, periodic jobs, the CLI):
- ``cron="*/5 * * * *"`` — five fields (a sixth, seconds, works too), evaluated in UTC;
- ``interval=90`` (seconds), a ``timedelta``, or AI Flow's ``"D H M S"`` string (``"0 0 1 0"``: a minute);
- AI Flow's one-string form ``expression="cron@*/5 * * * *"`` / ``"interval@0 0 1 0"``.

Interval ticks are ``anchor + k * interval`` (the anchor is when the schedule was added), so a schedule
keeps its phase across restarts; times are epoch seconds (floats).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from aiflow_notebook.core.errors import InvalidArgumentError

MIN_INTERVAL_S = 0.1


@dataclass(frozen=True)
class Timing:
    cron: str | None = None
    interval: float | None = None

    @classmethod
    def parse(cls, cron: str | None = None, interval: Any = None, expression: str | None = None) -> Timing:
        """Check and normalise one of ``cron``, ``interval`` or ``expression``; a clear error otherwise."""
        given = [name for name, value in (("cron", cron), ("interval", interval), ("expression", expression))
                 if value is not None]
        if len(given) != 1:
            raise InvalidArgumentError("a schedule needs exactly one of cron='*/5 * * * *', interval=SECONDS or "
                                       f"expression='cron@...'|'interval@D H M S', got {given or 'none'}")
        if expression is not None:
            kind, _, rest = str(expression).partition("@")
            if kind not in ("cron", "interval") or not rest.strip():
                raise InvalidArgumentError(f"schedule expression {expression!r} must be 'cron@<cron expression>' "
                                           "or 'interval@<days> <hours> <minutes> <seconds>'")
            return cls.parse(**{kind: rest.strip()})
        if cron is not None:
            from croniter import croniter

            if not isinstance(cron, str) or not croniter.is_valid(cron):
                raise InvalidArgumentError(f"cron expression {cron!r} is not valid (five fields: minute hour "
                                           "day-of-month month day-of-week, e.g. '*/5 * * * *')")
            return cls(cron=cron.strip())
        return cls(interval=_seconds(interval))

    @classmethod
    def coerce(cls, value: Any) -> Timing:
        """A periodic job's ``periodic=``: ``"cron@..."``/``"interval@..."``, a cron string, seconds, a
        ``timedelta``, a ``{"cron": ...}``/``{"interval": ...}`` dict or a :class:`Timing`."""
        if isinstance(value, Timing):
            return value
        if isinstance(value, dict):
            return cls.parse(**value)
        if isinstance(value, str):
            return cls.parse(expression=value) if "@" in value else cls.parse(cron=value)
        return cls.parse(interval=value)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Timing:
        return cls(cron=data.get("cron"), interval=data.get("interval"))

    def to_dict(self) -> dict[str, Any]:
        return {"cron": self.cron} if self.cron is not None else {"interval": self.interval}

    def describe(self) -> str:
        return f"cron {self.cron} (UTC)" if self.cron is not None else f"every {self.interval:g} s"

    def next_after(self, after: float, anchor: float) -> float:
        """The first tick strictly after ``after`` (epoch seconds)."""
        if self.cron is not None:
            from croniter import croniter

            start = datetime.fromtimestamp(after, UTC)
            return croniter(self.cron, start).get_next(datetime).timestamp()
        if after < anchor:
            return anchor
        return anchor + (math.floor((after - anchor) / self.interval) + 1) * self.interval


def _seconds(interval: Any) -> float:
    if isinstance(interval, timedelta):
        seconds = interval.total_seconds()
    elif isinstance(interval, str) and len(interval.split()) == 4:
        try:
            days, hours, minutes, secs = (float(part) for part in interval.split())
        except ValueError:
            seconds = -1.0
        else:
            seconds = ((days * 24 + hours) * 60 + minutes) * 60 + secs
    elif isinstance(interval, int | float) and not isinstance(interval, bool):
        seconds = float(interval)
    else:
        try:
            seconds = float(interval)
        except (TypeError, ValueError):
            seconds = -1.0
    if not math.isfinite(seconds) or seconds < MIN_INTERVAL_S:
        raise InvalidArgumentError(f"interval {interval!r} must be at least {MIN_INTERVAL_S} s: seconds, a timedelta "
                                   "or 'D H M S' (days hours minutes seconds)")
    return seconds
