"""The dashboard's web application (aiohttp): routes, the login, and the middlewares every
response goes through: security headers, errors as pages, and authentication.

Nothing but the login page and the stylesheet is served without the token, and no response
ever names a person without it. Forms posted with the session cookie must carry the
session's CSRF token (and, when the browser sends one, a same-origin ``Origin``); scripts use
``Authorization: Bearer`` and need no CSRF token (they send no cookie).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import secrets
from collections.abc import Awaitable, Callable
from functools import partial
from importlib import resources
from typing import Any
from urllib.parse import urlencode, urlsplit

from aiohttp import web

from aipersona.core import (
    METRICS_CONTENT_TYPE,
    BadQuery,
    ConfigError,
    FieldValidationError,
    PersonaCore,
    PersonaNotFound,
)

from . import pages
from .auth import LOGIN_COOKIE, SESSION_COOKIE, Auth
from .pages import DASHBOARD, Dashboard
from .render import environment
from .settings import DashboardSettings, is_loopback

log = logging.getLogger("aipersona.dashboard")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self';"
        " frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",  # no-referrer would make browsers send "Origin: null"
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
}
PUBLIC = ("/login", "/static/")
UNAUTHORIZED = "401: Unauthorized"


def client_address(request: web.Request) -> str:
    """The peer's address (behind a reverse proxy: the proxy's, so all share one throttle)."""
    return request.remote or "unknown"


# -- middlewares ------------------------------------------------------------------------------


@web.middleware
async def security_headers(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        response = await handler(request)
    except web.HTTPException as exc:  # redirects
        exc.headers.update(SECURITY_HEADERS)
        exc.headers["Cache-Control"] = "no-store"
        raise
    response.headers.update(SECURITY_HEADERS)
    static = request.path.startswith("/static/") and response.status == 200
    response.headers["Cache-Control"] = "max-age=3600" if static else "no-store"
    return response


def _plain(request: web.Request) -> bool:
    """Errors for scripts, or for someone not signed in, are one line of text."""
    if request.path.startswith(("/api/", "/metrics")):
        return True
    return not request.app[DASHBOARD].session_csrf(request)


@web.middleware
async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Failures as a page (or one line of text for scripts), never a traceback."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        status, text = exc.status, exc.text or exc.reason
    except PersonaNotFound as exc:
        status, text = 404, f"Not found: {exc}"
    except (BadQuery, FieldValidationError) as exc:
        status, text = 400, f"Bad request: {exc}"
    except Exception:
        log.exception("dashboard: %s %s failed", request.method, request.path)
        status, text = 500, "500: the dashboard failed (see its log)"
    if status == 401:
        return web.Response(status=401, text=UNAUTHORIZED, headers={"WWW-Authenticate": "Bearer"})
    if _plain(request):
        return web.Response(status=status, text=text)
    return request.app[DASHBOARD].page(request, "error.html", status=status, message=text)


@web.middleware
async def authenticate(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Bearer token or a valid session cookie (with the CSRF token on a form post); a
    browser without either is sent to the login page, anything else gets 401."""
    if request.path == "/login" or request.path.startswith("/static/"):
        return await handler(request)
    auth = request.app[DASHBOARD].auth
    header = request.headers.get("Authorization")
    if header is not None:
        scheme, _, credential = header.partition(" ")
        if scheme.lower() != "bearer" or not await auth.attempt(
            client_address(request), credential.strip()
        ):
            raise web.HTTPUnauthorized()
        return await handler(request)
    cookie = request.cookies.get(SESSION_COOKIE, "")
    if cookie and auth.session_valid(cookie):
        if request.method == "POST":
            await check_form(request, cookie)
        return await handler(request)
    if request.method == "GET" and not request.path.startswith(("/api/", "/metrics")):
        raise web.HTTPSeeOther("/login?" + urlencode({"next": request.path_qs}))
    raise web.HTTPUnauthorized()


async def check_form(request: web.Request, cookie: str) -> None:
    """A form posted with the session cookie: same origin, and the session's CSRF token."""
    origin = request.headers.get("Origin")
    if origin is not None and urlsplit(origin).netloc != request.host:
        raise web.HTTPForbidden(text="403: this form was posted from another site")
    form = await request.post()
    if not request.app[DASHBOARD].auth.csrf_valid(cookie, str(form.get("csrf", ""))):
        raise web.HTTPForbidden(
            text="403: the form's CSRF token is missing or wrong; reload the page"
        )


def safe_next(value: str) -> str:
    """Where to go after the login: a path on this site only (no open redirect)."""
    if value.startswith("/") and not value.startswith(("//", "/\\")):
        return value
    return "/"


# -- login ------------------------------------------------------------------------------------


def login_page(
    request: web.Request, *, error: str = "", status: int = 200, next_path: str = "/"
) -> web.Response:
    dash = request.app[DASHBOARD]
    auth = dash.auth
    nonce = secrets.token_urlsafe(16)
    response = dash.page(
        request,
        "login.html",
        status=status,
        login_csrf=auth.csrf_for(nonce),
        signed_in=False,  # the login page shows no navigation and no other form
        next=safe_next(next_path),
        error=error,
    )
    response.set_cookie(
        LOGIN_COOKIE,
        nonce,
        path="/login",
        httponly=True,
        samesite="Strict",
        secure=dash.settings.secure_cookie,
    )
    return response


async def login_form(request: web.Request) -> web.Response:
    return login_page(request, next_path=request.query.get("next", "/"))


async def login(request: web.Request) -> web.Response:
    dash = request.app[DASHBOARD]
    auth = dash.auth
    form = await request.post()
    next_path = safe_next(str(form.get("next", "/")))
    if not auth.csrf_valid(request.cookies.get(LOGIN_COOKIE, ""), str(form.get("csrf", ""))):
        return login_page(
            request,
            error="The login form expired; please try again.",
            status=403,
            next_path=next_path,
        )
    if not await auth.attempt(client_address(request), str(form.get("token", "")).strip()):
        log.warning("dashboard: wrong token from %s", client_address(request))
        return login_page(request, error="Wrong token.", status=401, next_path=next_path)
    response = web.HTTPSeeOther(next_path)
    response.set_cookie(
        SESSION_COOKIE,
        auth.new_session(),
        max_age=int(auth.session_seconds),
        path="/",
        httponly=True,
        samesite="Strict",
        secure=dash.settings.secure_cookie,
    )
    response.del_cookie(LOGIN_COOKIE, path="/login")
    raise response


async def logout(request: web.Request) -> web.Response:
    response = web.HTTPSeeOther("/login")
    response.del_cookie(SESSION_COOKIE, path="/")
    raise response


# -- scripts: JSON and metrics ----------------------------------------------------------------


def _json(data: Any) -> web.Response:
    dumps = partial(json.dumps, ensure_ascii=False, default=str)
    return web.json_response(data, dumps=dumps)


async def api_overview(request: web.Request) -> web.Response:
    dash = request.app[DASHBOARD]
    data = await dash.core.operator.overview(pages.int_arg(request, "days", low=1, high=90) or 14)
    return _json({**dataclasses.asdict(data), "cost_per_day": pages.day_costs(dash, data)})


async def api_personas(request: web.Request) -> web.Response:
    dash = request.app[DASHBOARD]
    page = await dash.core.operator.personas(pages.search_query(request, dash.settings.page_size))
    return _json(dataclasses.asdict(page))


async def api_persona(request: web.Request) -> web.Response:
    dash = request.app[DASHBOARD]
    detail = await dash.core.operator.persona(
        pages.persona_id(request), history_before=pages.int_arg(request, "before")
    )
    return _json(dataclasses.asdict(detail))


async def api_optimizer(request: web.Request) -> web.Response:
    dash = request.app[DASHBOARD]
    found = await dash.core.operator.optimizer_log(
        outcome=pages.log_filter(request),
        persona_id=pages.int_arg(request, "persona"),
        before=pages.int_arg(request, "before"),
        limit=dash.settings.page_size,
    )
    return _json(dataclasses.asdict(found))


async def metrics(request: web.Request) -> web.Response:
    body = await request.app[DASHBOARD].core.operator.metrics()
    return web.Response(body=body, headers={"Content-Type": METRICS_CONTENT_TYPE})


# -- the application --------------------------------------------------------------------------


def build_app(core: PersonaCore, settings: DashboardSettings, token: str) -> web.Application:
    """The dashboard of a started core, for the access ``token``."""
    app = web.Application(middlewares=[security_headers, errors, authenticate])
    auth = Auth(token, session_seconds=settings.session_hours * 3600)
    app[DASHBOARD] = Dashboard(core, settings, environment(), auth)
    persona = r"/personas/{persona:\d{1,18}}"
    app.router.add_get("/login", login_form)
    app.router.add_post("/login", login)
    app.router.add_post("/logout", logout)
    app.router.add_get("/", pages.overview)
    app.router.add_get("/personas", pages.personas)
    app.router.add_get(persona, pages.persona)
    app.router.add_get(persona + r"/rollback/{version:\d{1,18}}", pages.confirm_rollback)
    app.router.add_post(persona + r"/rollback/{version:\d{1,18}}", pages.rollback)
    app.router.add_get(persona + "/forget", pages.confirm_forget)
    app.router.add_post(persona + "/forget", pages.forget)
    app.router.add_get(persona + "/delete", pages.confirm_delete)
    app.router.add_post(persona + "/delete", pages.delete)
    app.router.add_get("/optimizer", pages.optimizer)
    app.router.add_get("/plugins", pages.plugins)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/api/overview", api_overview)
    app.router.add_get("/api/personas", api_personas)
    app.router.add_get("/api/" + persona[1:], api_persona)
    app.router.add_get("/api/optimizer", api_optimizer)
    static = resources.files("aipersona.dashboard").joinpath("static")
    app.router.add_static("/static/", str(static), show_index=False, follow_symlinks=False)
    return app


async def serve(
    core: PersonaCore,
    settings: DashboardSettings,
    stop: asyncio.Event,
    *,
    host: str | None = None,
    port: int | None = None,
) -> None:
    """Serve the dashboard of a started core until ``stop`` is set. ConfigError (before
    anything listens) without a token, or when the address cannot be bound."""
    host = host or settings.host
    port = settings.port if port is None else port
    app = build_app(core, settings, settings.token())
    runner = web.AppRunner(app, access_log=None)  # URLs carry search text: not logged
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        try:
            await site.start()
        except OSError as exc:
            raise ConfigError(
                f"the dashboard cannot listen on {host}:{port}: {exc.strerror or exc}"
            ) from None
        where = f"http://{host}:{port}/"
        if is_loopback(host):
            log.warning("dashboard on %s", where)
        else:
            log.warning("dashboard on %s: not loopback, put HTTPS in front of it", where)
        await stop.wait()
    finally:
        await runner.cleanup()
