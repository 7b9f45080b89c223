"""Flood control: python-telegram-bot's ``AIORateLimiter`` set up from ``[telegram] flood_*``.

Telegram answers ``429 Too Many Requests`` (``RetryAfter``) to a bot that sends more than
about 30 messages a second overall or 20 a minute into one group. The standalone bot's
Application gets a :class:`FloodLimiter`; an embedding host may install one too::

    Application.builder().token(TOKEN).rate_limiter(FloodLimiter(settings)).build()
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from telegram import Bot
from telegram.ext import AIORateLimiter

from .settings import TelegramSettings


def leaky_bucket(messages: int, seconds: float) -> tuple[float, float]:
    """``(max_rate, time_period)`` of an aiolimiter bucket that never lets more than
    ``messages`` requests start within any ``seconds`` (``(0, 0)``: no limit).

    aiolimiter's ``AsyncLimiter(max_rate, time_period)`` is a leaky bucket: a burst of up to
    ``max_rate`` requests, then ``max_rate`` per ``time_period``. Used directly with Telegram's
    numbers it would let through up to twice ``messages`` in one ``seconds`` window (the burst
    plus what drained meanwhile). So the burst is a quarter of the limit (at least 1) and the
    bucket drains the rest over ``seconds``: burst + drained = ``messages`` in any window.
    """
    if messages <= 0:
        return 0, 0
    burst = max(1, messages // 4)
    rest = max(messages - burst, 1)
    return float(burst), burst * seconds / rest


class FloodLimiter(AIORateLimiter):
    """``AIORateLimiter`` with hard ceilings from the settings (see :func:`leaky_bucket`).

    Every request naming a chat counts towards ``flood_overall_messages`` per
    ``flood_overall_seconds``; requests to a group (negative chat id) also towards
    ``flood_group_messages`` per ``flood_group_seconds`` for that group. A ``RetryAfter`` is
    retried up to ``flood_max_retries`` times, all requests pausing for the asked time.
    (PTB takes the group slot before the overall one: when the overall limit is the
    bottleneck, sends queued for it can go out into a group closer together than the group
    limit; a resulting ``RetryAfter`` is retried.)

    Chat actions ("typing…", repeated every few seconds while the model works) are not
    messages and are sent unthrottled: counted, they would use up most of a group's 20 a
    minute and hold the replies back. A refused one is just skipped (see ``outbox.typing``).
    """

    def __init__(self, settings: TelegramSettings) -> None:
        overall = leaky_bucket(settings.flood_overall_messages, settings.flood_overall_seconds)
        group = leaky_bucket(settings.flood_group_messages, settings.flood_group_seconds)
        super().__init__(
            overall_max_rate=overall[0],
            overall_time_period=overall[1],
            group_max_rate=group[0],
            group_time_period=group[1],
            max_retries=settings.flood_max_retries,
        )
        self.max_retries = settings.flood_max_retries

    async def process_request(
        self,
        callback: Callable[..., Coroutine[Any, Any, Any]],
        args: Any,
        kwargs: dict[str, Any],
        endpoint: str,
        data: dict[str, Any],
        rate_limit_args: int | None,
    ) -> Any:
        if endpoint == "sendChatAction":
            return await callback(*args, **kwargs)
        return await super().process_request(
            callback, args, kwargs, endpoint, data, rate_limit_args
        )


def flood_limiter(settings: TelegramSettings) -> FloodLimiter | None:
    """The limiter for the standalone bot, or None if every ``flood_*`` limit is off."""
    if not (
        settings.flood_overall_messages
        or settings.flood_group_messages
        or settings.flood_max_retries
    ):
        return None
    return FloodLimiter(settings)


def retries_flood_control(bot: Bot) -> bool:
    """Whether ``bot``'s rate limiter already waits out ``RetryAfter`` (our FloodLimiter with
    retries). A host's own limiter may or may not retry; we can't tell, so it counts as not."""
    limiter = getattr(bot, "rate_limiter", None)
    return isinstance(limiter, FloodLimiter) and limiter.max_retries > 0
