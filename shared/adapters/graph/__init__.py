"""Microsoft Graph adapter: the CalendarGateway port over msgraph-sdk.

`build_calendar_gateway(settings, managed_identity)` is what the composition root calls,
once per process.
"""

from shared.adapters.graph.client import StaticTokenCredential
from shared.adapters.graph.gateway import GraphCalendarGateway, build_calendar_gateway
from shared.adapters.graph.mapping import BOOKING_ID_PROPERTY, ScheduleBlock
from shared.adapters.graph.throttle import MailboxSlots, RetryPolicy

__all__ = [
    "BOOKING_ID_PROPERTY",
    "GraphCalendarGateway",
    "MailboxSlots",
    "RetryPolicy",
    "ScheduleBlock",
    "StaticTokenCredential",
    "build_calendar_gateway",
]
