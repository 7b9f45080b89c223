"""The pages: Overview, Personas, one persona (with confirmed rollback and forget when edits
are allowed), Optimizer log, Plugins. Each handler reads through ``PersonaCore.operator`` and
renders a template; nothing is fetched from anywhere else."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import jinja2
from aiohttp import web

from aipersona.core import (
    LOG_FILTERS,
    BadQuery,
    OverviewData,
    PersonaCore,
    PersonaQuery,
)

from .auth import SESSION_COOKIE, Auth
from .charts import Chart, stacked_bars
from .settings import DashboardSettings

log = logging.getLogger("aipersona.dashboard")

MAX_SEARCH_CHARS = 200
# what the page says after a change (a fixed text per key: nothing from the URL is shown)
DONE = {
    "rolled_back": "Rolled back: the field has that value again (a new version).",
    "unchanged": "Nothing to do: the field already has that value.",
    "forgotten": "Forgotten: the field is deleted (a new version).",
    "deleted": "Everything stored about that person was deleted.",
}


@dataclass
class Dashboard:
    """What every handler needs, stored on the application."""

    core: PersonaCore
    settings: DashboardSettings
    templates: jinja2.Environment
    auth: Auth

    def session_csrf(self, request: web.Request) -> str:
        """The CSRF token of the request's valid session ("" when not signed in)."""
        cookie = request.cookies.get(SESSION_COOKIE, "")
        return self.auth.csrf_for(cookie) if cookie and self.auth.session_valid(cookie) else ""

    def page(
        self, request: web.Request, name: str, status: int = 200, **context: Any
    ) -> web.Response:
        csrf = self.session_csrf(request)
        values = {
            "nav": "",
            "csrf": csrf,
            "signed_in": bool(csrf),
            "allow_edits": self.settings.allow_edits,
            "done": DONE.get(request.query.get("done", ""), ""),
            **context,
        }
        html = self.templates.get_template(name).render(values)
        return web.Response(text=html, status=status, content_type="text/html", charset="utf-8")


DASHBOARD: web.AppKey[Dashboard] = web.AppKey("dashboard", Dashboard)


def int_arg(request: web.Request, name: str, *, low: int = 0, high: int = 2**62) -> int | None:
    """An integer query parameter (None if absent); BadQuery if it is not one in range."""
    raw = request.query.get(name, "").strip()
    if not raw:
        return None
    if not raw.isdigit() or not low <= int(raw) <= high:
        raise BadQuery(f"{name} must be a whole number from {low} to {high}")
    return int(raw)


def persona_id(request: web.Request) -> int:
    """The ``{persona}`` of the route (digits only, at most 18 of them: the route says so)."""
    return int(request.match_info["persona"])


# -- overview -------------------------------------------------------------------------------


def overview_charts(data: OverviewData, costs: list[float] | None) -> list[Chart]:
    s = data.series
    days = data.days
    chat = s("chat_prompt_tokens", "chat_completion_tokens")
    opt = s("optimizer_prompt_tokens", "optimizer_completion_tokens")
    charts = [
        stacked_bars("Messages per day", days, [("user messages", "c1", s("messages"))]),
        stacked_bars(
            "Persona updates per day",
            days,
            [
                ("applied", "ok", s("updates_applied")),
                ("rejected", "warn", s("updates_rejected")),
                ("unchanged", "muted", s("updates_unchanged")),
                ("failed", "bad", s("updates_failed")),
            ],
        ),
        stacked_bars("Tokens per day", days, [("chat", "c1", chat), ("optimizer", "c2", opt)]),
    ]
    if costs is not None:
        charts.append(stacked_bars("Estimated cost per day", days, [("cost", "c3", costs)]))
    charts += [
        stacked_bars(
            "LLM errors per day",
            days,
            [
                ("chat replies failed", "bad", s("chat_llm_errors")),
                ("optimizer attempts failed", "warn", s("update_attempts_failed")),
            ],
        ),
        stacked_bars("New users per day", days, [("new users", "c2", s("new_users"))]),
    ]
    return charts


def day_costs(dash: Dashboard, data: OverviewData) -> list[float] | None:
    """Each day's estimated cost at the ``[llm]`` prices (None when none are set)."""
    prompt = data.series("chat_prompt_tokens", "optimizer_prompt_tokens")
    completion = data.series("chat_completion_tokens", "optimizer_completion_tokens")
    costs = [dash.core.operator.cost(p, c) for p, c in zip(prompt, completion, strict=True)]
    if any(c is None for c in costs):
        return None
    return [c or 0.0 for c in costs]


# the per-day table: a column's header and the counters it adds up
COLUMNS = (
    ("messages", ("messages",)),
    ("new users", ("new_users",)),
    ("users removed", ("users_removed",)),
    ("updates applied", ("updates_applied",)),
    ("rejected", ("updates_rejected",)),
    ("unchanged", ("updates_unchanged",)),
    ("failed", ("updates_failed",)),
    ("chat tokens", ("chat_prompt_tokens", "chat_completion_tokens")),
    ("optimizer tokens", ("optimizer_prompt_tokens", "optimizer_completion_tokens")),
    ("chat LLM errors", ("chat_llm_errors",)),
    ("optimizer attempts failed", ("update_attempts_failed",)),
    ("budget refusals", ("budget_refusals",)),
)
TOKENS = (
    "chat_prompt_tokens",
    "chat_completion_tokens",
    "optimizer_prompt_tokens",
    "optimizer_completion_tokens",
)


def day_table(
    data: OverviewData, costs: list[float] | None
) -> tuple[list[str], list[tuple[str, list[str]]]]:
    """The per-day table, newest day first, its cells formatted once here (a 90-day table is
    over a thousand cells: cheaper than a template expression each)."""
    headers = [name for name, _ in COLUMNS]
    if costs is not None:
        headers.insert(headers.index("optimizer tokens") + 1, "est. cost")
    rows = []
    for i in range(len(data.days) - 1, -1, -1):
        counts = data.counts.get(data.days[i], {})
        cells = [f"{sum(counts.get(k, 0) for k in keys):,}" for _, keys in COLUMNS]
        if costs is not None:
            cells.insert(headers.index("est. cost"), f"{costs[i]:,.4f}")
        rows.append((data.days[i], cells))
    return headers, rows


async def overview(request: web.Request) -> web.Response:
    dash = request.app[DASHBOARD]
    days = int_arg(request, "days", low=1, high=90) or 14
    data = await dash.core.operator.overview(days)
    costs = day_costs(dash, data)
    today = data.counts.get(data.days[-1], {})
    headers, rows = day_table(data, costs)
    return dash.page(
        request,
        "overview.html",
        nav="overview",
        data=data,
        days=days,
        headers=headers,
        rows=rows,
        today={
            "messages": today.get("messages", 0),
            "tokens": sum(today.get(k, 0) for k in TOKENS),
            "cost": None if costs is None else costs[-1],
            "errors": today.get("chat_llm_errors", 0) + today.get("update_attempts_failed", 0),
        },
        charts=overview_charts(data, costs),
        prices=costs is not None,
    )


# -- people -----------------------------------------------------------------------------------


def search_query(request: web.Request, page_size: int) -> PersonaQuery:
    q = request.query
    return PersonaQuery(
        text=q.get("q", "").strip()[:MAX_SEARCH_CHARS],
        by=q.get("by", "name"),
        platform=q.get("platform", "").strip()[:100],
        after=q.get("after", "")[:2000],
        limit=page_size,
    )


async def personas(request: web.Request) -> web.Response:
    dash = request.app[DASHBOARD]
    query = search_query(request, dash.settings.page_size)
    page = await dash.core.operator.personas(query)
    next_url = ""
    if page.next:
        args = {"q": query.text, "by": query.by, "platform": query.platform, "after": page.next}
        next_url = "/personas?" + urlencode(args)
    return dash.page(
        request,
        "personas.html",
        nav="personas",
        query=query,
        page=page,
        next_url=next_url,
        platforms=await dash.core.operator.platforms(),
    )


async def persona(request: web.Request) -> web.Response:
    dash = request.app[DASHBOARD]
    pid = persona_id(request)
    before = int_arg(request, "before")
    detail = await dash.core.operator.persona(pid, history_before=before)
    specs = dash.core.schema.fields
    return dash.page(
        request,
        "persona.html",
        nav="personas",
        d=detail,
        fields=[
            (name, detail.persona.values[name], specs.get(name))
            for name in sorted(detail.persona.values)
        ],
        older=f"/personas/{pid}?before={detail.history[-1].id}" if detail.more_history else "",
    )


# -- changes (only with [dashboard] allow_edits = true; each confirmed on its own page) -------


def require_edits(dash: Dashboard) -> None:
    if not dash.settings.allow_edits:
        raise web.HTTPForbidden(
            text="edits are off on this dashboard ([dashboard] allow_edits = false)"
        )


async def confirm_rollback(request: web.Request) -> web.Response:
    dash = request.app[DASHBOARD]
    require_edits(dash)
    pid, vid = persona_id(request), int(request.match_info["version"])
    entry = await dash.core.operator.version(pid, vid)
    current = (await dash.core.operator.persona(pid, history_limit=1)).persona.values
    return dash.page(
        request,
        "confirm.html",
        nav="personas",
        pid=pid,
        action=f"/personas/{pid}/rollback/{vid}",
        title=f"Roll back {entry.field} of persona #{pid}?",
        facts=[
            ("Field", entry.field),
            ("Value now", current.get(entry.field)),
            (f"Value after history entry #{vid} (after the rollback)", entry.new_value),
            ("Evidence of that entry", entry.evidence or None),
        ],
        note="The rollback is a new version: it can itself be rolled back.",
        fields={},
        button="Roll back",
    )


async def rollback(request: web.Request) -> web.Response:
    dash = request.app[DASHBOARD]
    require_edits(dash)
    pid, vid = persona_id(request), int(request.match_info["version"])
    changes = await dash.core.operator.rollback(pid, vid)
    log.warning("dashboard: persona %s rolled back to history entry #%s", pid, vid)
    done = "rolled_back" if changes else "unchanged"
    raise web.HTTPSeeOther(f"/personas/{pid}?done={done}")


async def confirm_forget(request: web.Request) -> web.Response:
    dash = request.app[DASHBOARD]
    require_edits(dash)
    pid = persona_id(request)
    name = dash.core.schema.get(request.query.get("field", "")).name
    detail = await dash.core.operator.persona(pid, history_limit=1)  # 404: no such persona
    return dash.page(
        request,
        "confirm.html",
        nav="personas",
        pid=pid,
        action=f"/personas/{pid}/forget",
        title=f"Forget {name} of persona #{pid}?",
        facts=[("Field", name), ("Value now", detail.persona.values.get(name))],
        note="Forgetting is a new version: it can be rolled back.",
        fields={"field": name},
        button="Forget the field",
    )


async def forget(request: web.Request) -> web.Response:
    dash = request.app[DASHBOARD]
    require_edits(dash)
    pid = persona_id(request)
    form = await request.post()
    name = str(form.get("field", ""))
    changed = await dash.core.operator.forget_field(pid, name)
    log.warning("dashboard: persona %s field %s forgotten", pid, name)
    raise web.HTTPSeeOther(f"/personas/{pid}?done={'forgotten' if changed else 'unchanged'}")


async def confirm_delete(request: web.Request) -> web.Response:
    dash = request.app[DASHBOARD]
    require_edits(dash)
    pid = persona_id(request)
    detail = await dash.core.operator.persona(pid, history_limit=1)
    who = ", ".join(f"{i.platform}:{i.user_id}" for i in detail.identities)
    return dash.page(
        request,
        "confirm.html",
        nav="personas",
        pid=pid,
        action=f"/personas/{pid}/delete",
        title=f"Forget everything about persona #{pid}?",
        facts=[("Identities", who), ("Fields", len(detail.persona.values))],
        note=(
            "The persona, its history, sessions, messages and updates are deleted for good "
            "(this cannot be undone)."
        ),
        fields={},
        button="Delete everything",
    )


async def delete(request: web.Request) -> web.Response:
    dash = request.app[DASHBOARD]
    require_edits(dash)
    pid = persona_id(request)
    if not await dash.core.operator.forget_all(pid):
        raise web.HTTPNotFound(text=f"no persona {pid}")
    log.warning("dashboard: persona %s deleted", pid)
    raise web.HTTPSeeOther("/personas?done=deleted")


# -- optimizer log and plugins ------------------------------------------------------------------


def log_filter(request: web.Request) -> str | None:
    outcome = request.query.get("outcome", "")
    if outcome in ("", "all"):
        return None
    if outcome not in LOG_FILTERS:
        raise BadQuery(f"outcome must be one of all, {', '.join(LOG_FILTERS)}")
    return outcome


async def optimizer(request: web.Request) -> web.Response:
    dash = request.app[DASHBOARD]
    outcome = log_filter(request)
    pid = int_arg(request, "persona")
    found = await dash.core.operator.optimizer_log(
        outcome=outcome,
        persona_id=pid,
        before=int_arg(request, "before"),
        limit=dash.settings.page_size,
    )
    base = {k: v for k, v in (("outcome", outcome or ""), ("persona", pid or "")) if v}
    older = ""
    if found.next_before is not None:
        older = "/optimizer?" + urlencode({**base, "before": found.next_before})
    return dash.page(
        request,
        "optimizer.html",
        nav="optimizer",
        log=found,
        outcome=outcome or "all",
        filters=["all", *LOG_FILTERS],
        persona=pid,
        older=older,
    )


async def plugins(request: web.Request) -> web.Response:
    dash = request.app[DASHBOARD]
    return dash.page(request, "plugins.html", nav="plugins", reports=dash.core.operator.plugins())
