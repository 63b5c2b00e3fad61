"""Timer schedules: NCRONTAB expressions (through croniter) and TimeSpan intervals.

NCRONTAB, as the Functions host reads it:
- six fields `{second} {minute} {hour} {day} {month} {day-of-week}`; five fields (no
  seconds) are accepted too, as NCrontab does;
- a day-of-month and a day-of-week restriction must both match (NCrontab ANDs them,
  where classic cron ORs them), hence `day_or=False`;
- evaluated in UTC unless WEBSITE_TIME_ZONE names a time zone (IANA names only here).
A TimeSpan schedule such as "00:05:00" runs at that interval from host start.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterError, croniter

from local.functions_host.config import HostStartupError, looks_like_timespan, parse_timespan


class ScheduleError(ValueError):
    """A schedule that cannot be read."""


@dataclass(frozen=True)
class CronSchedule:
    expression: str
    timezone: tzinfo

    def next_after(self, moment: datetime) -> datetime:
        """The first occurrence strictly after `moment` (an aware datetime), in UTC."""
        local = moment.astimezone(self.timezone)
        seconds_first = len(self.expression.split()) == 6
        iterator = croniter(self.expression, local, second_at_beginning=seconds_first, day_or=False)
        occurrence: datetime = iterator.get_next(datetime)
        return occurrence.astimezone(UTC)


@dataclass(frozen=True)
class IntervalSchedule:
    interval: timedelta

    def next_after(self, moment: datetime) -> datetime:
        return moment.astimezone(UTC) + self.interval


Schedule = CronSchedule | IntervalSchedule


def parse_schedule(text: str, environ: Mapping[str, str]) -> Schedule:
    """A schedule from an NCRONTAB expression or a TimeSpan. Raises ScheduleError."""
    text = text.strip()
    if looks_like_timespan(text):
        try:
            seconds = parse_timespan(text, "schedule")
        except HostStartupError as error:
            raise ScheduleError(str(error)) from error
        if seconds <= 0:
            raise ScheduleError(f"schedule '{text}' must be a positive interval")
        return IntervalSchedule(timedelta(seconds=seconds))
    fields = text.split()
    if len(fields) not in (5, 6):
        raise ScheduleError(
            f"schedule '{text}' is not an NCRONTAB expression "
            "({second} {minute} {hour} {day} {month} {day-of-week})"
        )
    if not croniter.is_valid(text, second_at_beginning=len(fields) == 6):
        raise ScheduleError(f"schedule '{text}' is not a valid NCRONTAB expression")
    schedule = CronSchedule(text, _timezone(environ))
    try:
        schedule.next_after(datetime.now(UTC))
    except (CroniterError, ValueError) as error:
        raise ScheduleError(f"schedule '{text}' never fires: {error}") from error
    return schedule


def _timezone(environ: Mapping[str, str]) -> tzinfo:
    name = environ.get("WEBSITE_TIME_ZONE", "").strip()
    if not name:
        return UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as error:
        raise ScheduleError(
            f"WEBSITE_TIME_ZONE '{name}' is not an IANA time zone name the local host knows"
        ) from error
