"""Timers: reconciliation fan-out (pages of resources, see shared/services/rounds.py), and
the hourly upkeep: subscriptions renewed, expired records purged (schedules from app
settings)."""

from __future__ import annotations

import azure.functions as func

from shared.composition import get_services

bp = func.Blueprint()  # type: ignore[no-untyped-call]  # azure-functions lacks annotations here


@bp.timer_trigger(arg_name="timer", schedule="%RECONCILE_SCHEDULE%")
async def reconcile_timer(timer: func.TimerRequest) -> None:
    await get_services().rounds.fan_out(past_due=timer.past_due)


@bp.timer_trigger(arg_name="timer", schedule="%SUBSCRIPTION_UPKEEP_SCHEDULE%")
async def subscription_upkeep_timer(timer: func.TimerRequest) -> None:
    upkeep = get_services().upkeep
    try:
        await upkeep.renew_subscriptions()
    finally:
        await upkeep.purge_expired()  # whatever became of the renewals
