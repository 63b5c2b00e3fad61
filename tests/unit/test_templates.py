"""Subject/body templates: `{field}` placeholders only, and rendered within Outlook's limits.

A template is stored when a resource is saved and rendered on every push, so anything a
render could choke on (a format spec, a conversion, a nested width) is refused up front."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from shared.domain.resources import TEMPLATE_PLACEHOLDERS, ResourceSettings
from shared.services.push import render_draft
from tests.builders import booking, resource


def settings_with(**templates: str) -> ResourceSettings:
    return ResourceSettings.model_validate(
        {"mailbox": "r@contoso.com", "displayName": "R", **templates}
    )


@pytest.mark.parametrize(
    ("template", "offending"),
    [
        ("{title:d}", "{title:d}"),
        ("Training: {title:>1000000000}", "{title:>1000000000}"),
        ("{title:>{notes}}", "{title:>{notes}}"),
        ("{title!r}", "{title!r}"),
        ("{title!s:>5}", "{title!s:>5}"),
        ("{title.upper}", "{title.upper}"),
        ("{title[0]}", "{title[0]}"),
        ("{0}", "{0}"),
        ("{}", "{}"),
        ("{title", "{title"),
        ("title}", "}"),
    ],
)
@pytest.mark.parametrize("field", ["subjectTemplate", "bodyTemplate"])
def test_anything_but_a_plain_placeholder_is_refused_naming_the_part(
    field: str, template: str, offending: str
) -> None:
    with pytest.raises(ValidationError) as exc:
        settings_with(**{field: template})
    errors = exc.value.errors()
    assert [".".join(map(str, e["loc"])) for e in errors] == [field]
    assert offending in errors[0]["msg"]


def test_every_placeholder_and_escaped_braces_are_accepted() -> None:
    body = " ".join("{" + name + "}" for name in sorted(TEMPLATE_PLACEHOLDERS)) + " {{literal}}"
    settings = settings_with(subjectTemplate="Training: {title}", bodyTemplate=body)
    assert settings.body_template == body


def test_rendered_subject_is_capped_at_outlooks_255_characters() -> None:
    room = resource(subject_template="Training for {customerName}: {title} ({title})")
    draft = render_draft(booking(title="t" * 255), room)
    assert draft is not None
    assert len(draft.subject) == 255
    assert draft.subject.startswith("Training for Ada: ttt")


def test_a_customers_braces_are_text_not_placeholders() -> None:
    room = resource(subject_template="{title}", body_template="{notes}")
    draft = render_draft(booking(title="{bookingId:>99999}", notes="{title!r}"), room)
    assert draft is not None
    assert (draft.subject, draft.body) == ("{bookingId:>99999}", "{title!r}")


def test_characters_an_event_cannot_hold_never_reach_it() -> None:
    """Templates and bookings stored before the request refused them may still hold
    control characters: the event is written without them (tab and line breaks stay)."""
    room = resource(subject_template="S\x00{title}\x1b", body_template="B\x01{customerEmail}\t\n")
    stored = booking(title="T\ufffe", location="Room\x07 1")
    stored = stored.model_copy(
        update={"customer": stored.customer.model_copy(update={"email": "a\x01@b.com"})}
    )
    draft = render_draft(stored, room)
    assert draft is not None
    assert (draft.subject, draft.body, draft.location) == ("ST", "Ba@b.com", "Room 1")
