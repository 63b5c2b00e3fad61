"""Template previews: what a resource's event subject and body would read for a sample
booking, rendered by the same code as the push (shared/services/push.py)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo

from shared.domain.base import DomainModel, UtcDatetime
from shared.domain.bookings import Booking, Customer
from shared.domain.resources import DEFAULT_BODY_TEMPLATE, Template, TimeZoneName
from shared.services.push import render_templates

SAMPLE_BOOKING_ID = "bk-sample"


class TemplatePreviewRequest(DomainModel):
    """The templates and time zone of a resource's settings (PUT /api/resources/{id}),
    with the same rules and defaults."""

    subject_template: Template = "{title}"
    body_template: Template = DEFAULT_BODY_TEMPLATE
    time_zone: TimeZoneName = "UTC"


class SampleBooking(DomainModel):
    """The booking a preview is rendered for."""

    booking_id: str
    title: str
    customer: Customer
    location: str
    notes: str
    start: UtcDatetime
    end: UtcDatetime


class TemplatePreview(DomainModel):
    """The event a sample booking would make: its subject and body as Outlook shows them."""

    subject: str
    body: str
    sample: SampleBooking


def preview_templates(
    request: TemplatePreviewRequest, clock: Callable[[], datetime]
) -> TemplatePreview:
    """Render the templates for a sample booking tomorrow 09:00-10:00 in the time zone."""
    zone = ZoneInfo(request.time_zone)
    now = clock()
    day = now.astimezone(zone).date() + timedelta(days=1)
    start = datetime.combine(day, time(9, 0), zone)
    sample = Booking(
        booking_id=SAMPLE_BOOKING_ID,
        resource_ids=["room-1"],
        start=start,
        end=start + timedelta(hours=1),
        title="Consultation",
        customer=Customer(name="Kim Lee", email="kim@example.com"),
        location="Room 1",
        notes="First visit; parking at the back.",
        external_id="order-1234",
        created_at=now,
        updated_at=now,
    )
    subject, body = render_templates(
        sample, request.subject_template, request.body_template, request.time_zone
    )
    shown = SampleBooking(
        booking_id=sample.booking_id,
        title=sample.title,
        customer=sample.customer,
        location=sample.location or "",
        notes=sample.notes or "",
        start=sample.start,
        end=sample.end,
    )
    return TemplatePreview(subject=subject, body=body, sample=shown)
