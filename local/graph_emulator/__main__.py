"""``python -m local.graph_emulator --host 127.0.0.1 --port 7072 --mailbox a@contoso.com``

Serves Graph under ``http://HOST:PORT/v1.0`` until SIGINT or SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Sequence

from local.graph_emulator.config import DEFAULT_TENANT_ID, EmulatorConfig
from local.graph_emulator.server import start_emulator

logger = logging.getLogger(__name__)


def _client(value: str) -> tuple[str, str]:
    client_id, separator, secret = value.partition(":")
    if not separator or not client_id or not secret:
        raise argparse.ArgumentTypeError("expected CLIENT_ID:SECRET")
    return client_id, secret


def _delays(value: str) -> tuple[float, ...]:
    try:
        return tuple(float(part) for part in value.split(",") if part.strip())
    except ValueError as exc:
        raise argparse.ArgumentTypeError("expected seconds separated by commas") from exc


def build_parser() -> argparse.ArgumentParser:
    defaults = EmulatorConfig()
    parser = argparse.ArgumentParser(
        prog="python -m local.graph_emulator", description="Microsoft Graph v1.0 emulator."
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=7072)
    parser.add_argument(
        "--mailbox", action="append", default=[], help="create this mailbox (repeatable)"
    )
    parser.add_argument("--tenant-id", default=DEFAULT_TENANT_ID)
    parser.add_argument(
        "--strict-auth",
        action="store_true",
        help="accept only tokens issued by POST /{tenant}/oauth2/v2.0/token",
    )
    parser.add_argument(
        "--client",
        action="append",
        type=_client,
        default=[],
        metavar="CLIENT_ID:SECRET",
        help="known client credentials (repeatable; none = any client id and secret)",
    )
    parser.add_argument("--token-lifetime", type=int, default=defaults.token_lifetime_s)
    parser.add_argument("--mailbox-concurrency", type=int, default=defaults.mailbox_concurrency)
    parser.add_argument(
        "--mailbox-budget",
        type=int,
        default=defaults.mailbox_budget,
        help="requests per mailbox per budget window",
    )
    parser.add_argument(
        "--budget-window", type=float, default=defaults.mailbox_budget_window_s, help="seconds"
    )
    parser.add_argument(
        "--max-subscription-minutes", type=int, default=defaults.max_subscription_minutes
    )
    parser.add_argument(
        "--validation-timeout", type=float, default=defaults.validation_timeout_s, help="seconds"
    )
    parser.add_argument(
        "--notification-batch-ms",
        type=float,
        default=defaults.notification_batch_window_s * 1000,
    )
    parser.add_argument("--notification-delay-ms", type=float, default=0.0)
    parser.add_argument(
        "--notification-timeout",
        type=float,
        default=defaults.notification_timeout_s,
        help="seconds per delivery POST",
    )
    parser.add_argument(
        "--notification-retry-delays",
        type=_delays,
        default=defaults.notification_retry_delays_s,
        help="seconds between delivery attempts, comma-separated",
    )
    parser.add_argument(
        "--duplicates", action="store_true", help="send the duplicates Graph often sends"
    )
    parser.add_argument(
        "--no-missed-on-give-up",
        action="store_true",
        help="do not send a 'missed' lifecycle notification when delivery gives up",
    )
    parser.add_argument(
        "--allow-http",
        action="store_true",
        help="accept http notification URLs (Graph requires https; the local stack has none)",
    )
    parser.add_argument(
        "--deleted-items-unreadable",
        action="store_true",
        help="a GET by id of a deleted event answers 404 (default: found in Deleted Items)",
    )
    parser.add_argument(
        "--event-parent-folder-id",
        action="store_true",
        help="events carry a parentFolderId (default: none, as Graph's event resource has none)",
    )
    parser.add_argument(
        "--mailbox-events-without-deleted-items",
        action="store_true",
        help="GET /users/{id}/events lists the calendar's events alone (default: Deleted "
        "Items' too, the mailbox's)",
    )
    parser.add_argument(
        "--answer-writes-in-preferred-zone",
        action="store_true",
        help="answer creates and updates in the Prefer outlook.timezone (default: the "
        "zone the event was written in, as Graph does)",
    )
    parser.add_argument(
        "--accept-any-iana-zone",
        action="store_true",
        help="writes take any IANA zone name (default: Windows names and only the IANA "
        "names Graph lists for dateTimeTimeZone, as Graph does)",
    )
    parser.add_argument(
        "--master-updates",
        type=int,
        default=defaults.master_updates_per_occurrence_change,
        help="`updated` notifications of a series master per occurrence change (a room "
        "mailbox sends several)",
    )
    parser.add_argument("--page-size", type=int, default=defaults.default_page_size)
    parser.add_argument("--latency-ms", type=int, default=0)
    parser.add_argument("--log-level", default="INFO")
    return parser


def config_from(args: argparse.Namespace) -> EmulatorConfig:
    return EmulatorConfig(
        tenant_id=args.tenant_id,
        startup_mailboxes=tuple(args.mailbox),
        strict_auth=args.strict_auth,
        client_credentials=dict(args.client),
        token_lifetime_s=args.token_lifetime,
        mailbox_concurrency=args.mailbox_concurrency,
        mailbox_budget=args.mailbox_budget,
        mailbox_budget_window_s=args.budget_window,
        max_subscription_minutes=args.max_subscription_minutes,
        validation_timeout_s=args.validation_timeout,
        notification_batch_window_s=args.notification_batch_ms / 1000,
        notification_delay_s=args.notification_delay_ms / 1000,
        notification_timeout_s=args.notification_timeout,
        notification_retry_delays_s=args.notification_retry_delays,
        duplicate_notifications=args.duplicates,
        missed_on_give_up=not args.no_missed_on_give_up,
        default_page_size=args.page_size,
        allow_http_notification_urls=args.allow_http,
        deleted_items_readable=not args.deleted_items_unreadable,
        event_parent_folder_id=args.event_parent_folder_id,
        mailbox_events_include_deleted_items=not args.mailbox_events_without_deleted_items,
        master_updates_per_occurrence_change=args.master_updates,
        answer_writes_in_written_zone=not args.answer_writes_in_preferred_zone,
        accept_any_iana_zone=args.accept_any_iana_zone,
        latency_ms=args.latency_ms,
    )


async def serve(host: str, port: int, config: EmulatorConfig) -> None:
    running = await start_emulator(host, port, config=config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    logger.info(
        "Graph base URL %s; control API %s; mailboxes: %s",
        running.graph_url,
        running.control_url,
        ", ".join(config.startup_mailboxes) or "(none)",
    )
    try:
        await stop.wait()
    finally:
        logger.info("stopping")
        await running.close()


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # This CLI is its own process, so it owns its event loop (unlike the Functions app).
    asyncio.run(serve(args.host, args.port, config_from(args)))  # noqa: TID251
    return 0


if __name__ == "__main__":
    sys.exit(main())
