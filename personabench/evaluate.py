"""The evaluation protocol (AI PERSONA, Sec. 5) over PersonaBench data.

Conditions:

- ``no_persona``: the chatbot with an empty persona that never learns;
- ``golden_persona``: the chatbot given the golden persona (written through ``edit_persona``);
- ``rag``: empty persona, plus the earlier turns of this user most similar to the current
  message (embeddings through ``/v1/embeddings``, or word overlap where the endpoint has
  none; see ``retrieval.py``) in the system prompt;
- ``learned_kN``: starts from an EMPTY persona; the real PersonaCore optimizer updates it every
  N sessions (``persona.update_every = N``), so later sessions use what was learned.

For each condition and persona a PersonaCore with its own SQLite file runs the persona's scenes
in file order, one session each, the core opened for the session and closed after it
(``state.py`` keeps the file in step with ``items.jsonl``). The first user turn is the
scene's neutralized query; after each reply the satisfaction check decides whether the user
is satisfied and, if not (and fewer than ``max_turns`` user messages were sent), the
follow-up writer, which never sees the expected response, writes the next user message
(``simulator.py``). The chatbot gets the scene description as ``[bench] chatbot_scene`` says.
The scene's ``available_apis`` are offered as tools (``PersonaCore.extra_tools``) for that
session and answered by the tool simulator (API spec, arguments and scene context only). The
judge scores the FIRST response of each session; after the session (and the persona update
it may trigger, retried up to ``update_retries`` times) the persona is compared with the
golden one by the similarity judge (0-10) and by lexical overlap (0-1).

Every finished session is appended to ``items.jsonl`` and skipped on a rerun; an interrupted
session is discarded (its tokens are still counted) and rerun from its start. A rerun with
other settings is refused (``manifest.py``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aipersona.core import Config, Edit, Identity, PersonaCore, Tool, ToolContext, flatten

from . import report
from .clients import ModelPool, SessionMeter, metering, usage_label
from .data import (
    BenchPersona,
    DataError,
    Scene,
    append_jsonl,
    load_personas,
    prepare_dir,
    read_jsonl,
)
from .generate import shared_dir
from .judge import Similarity, judge_response, judge_similarity
from .manifest import check_and_record, data_fingerprint, fingerprint, public_config
from .metrics import lexical_similarity
from .retrieval import Retriever, SessionPrompt, resolve_retriever
from .roles import CHATBOT_PROMPT
from .settings import BenchSettings, RoleSettings, load_bench, parse_learned
from .simulator import SimulatedUser
from .state import JobState
from .tool_simulator import simulate_tool

log = logging.getLogger(__name__)

PERSONA_TOOLS = ("persona",)  # the built-in persona tool (all its ops)
ITEMS_FILE = "items.jsonl"
USAGE_FILE = "usage.jsonl"
DISCARDED_FILE = "discarded.jsonl"
RUNS_FILE = "runs.jsonl"
EVAL_ROLES = ("chatbot", "simulator", "judge", "tool_simulator")
_TOOL_NAME_RE = re.compile(r"[^A-Za-z0-9_-]")

Key = tuple[str, str, int]


@dataclass
class RunContext:
    settings: BenchSettings
    roles: dict[str, RoleSettings]
    base_config: Config
    pool: ModelPool
    out: Path
    run_id: str
    previous: dict[Key, dict[str, Any]] = field(default_factory=dict)
    retriever: Retriever | None = None
    progress: Callable[[], None] = lambda: None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def flush_usage(self) -> None:
        """Append the calls and tokens since the last flush to ``usage.jsonl``."""
        rows = self.pool.take_usage()
        if rows:
            append_jsonl(self.out / USAGE_FILE, [{"run": self.run_id, **r} for r in rows])


def core_config(ctx: RunContext, condition: str, db: Path) -> Config:
    """The chatbot's Config for one (condition, persona): own database, chatbot model."""
    cfg = ctx.base_config.model_copy(deep=True)
    cfg.llm = ctx.roles["chatbot"].llm.model_copy(deep=True)
    if ctx.pool.is_local("chatbot"):
        cfg.llm.tools = False  # the embedded 135M model cannot call tools
    cfg.database.path = str(db)
    cfg.database.url = ""
    k = parse_learned(condition)
    cfg.persona.update_every = k if k is not None else 1_000_000
    # the first attempt plus the bench's own retries; then the update counts as failed
    cfg.persona.max_update_attempts = 1 + ctx.settings.update_retries
    cfg.sessions.idle_minutes = 10.0**7
    cfg.sessions.history_messages = max(cfg.sessions.history_messages, 2 * ctx.settings.max_turns)
    cfg.chat.system_prompt = ctx.settings.chatbot_prompt or CHATBOT_PROMPT
    cfg.plugins.modules = []
    cfg.plugins.entry_points = False
    cfg.tools.enabled = True
    if not ctx.settings.persona_tools:
        cfg.tools.disabled = sorted({*cfg.tools.disabled, *PERSONA_TOOLS})
    return cfg


def shows_scene(policy: str, scene: Scene) -> bool:
    """Does the chatbot get the scene description? "paper": as the released code, which puts
    it into the prompt together with the scene's APIs, so only for scenes that have APIs."""
    if policy == "always":
        return bool(scene.scene_desc)
    if policy == "paper":
        return bool(scene.scene_desc and scene.available_apis)
    return False


def scene_tools(ctx: RunContext, scene: Scene, taken: set[str]) -> list[Tool]:
    out: list[Tool] = []
    timeout = ctx.roles["tool_simulator"].llm.timeout_seconds * 2 + 5
    for raw_name, spec in scene.available_apis.items():
        name = _TOOL_NAME_RE.sub("_", raw_name)[:64] or "api"
        while name in taken:
            name = f"api_{name}"[:64]
        taken.add(name)
        args = spec.get("arguments") or []
        params = {
            "type": "object",
            "properties": {
                (_TOOL_NAME_RE.sub("_", a)[:64] or f"arg{n}"): {"type": "string", "description": a}
                for n, a in enumerate(args)
            },
            "additionalProperties": True,
        }

        async def handler(
            _ctx: ToolContext, _name: str = raw_name, _spec: dict = spec, **arguments: Any
        ) -> str:
            return await simulate_tool(
                ctx.pool["tool_simulator"],
                _name,
                _spec,
                arguments,
                scene_context=scene.scene_context,
                max_tokens=ctx.settings.tool_max_tokens,
            )

        description = spec.get("description") or raw_name
        out.append(Tool(name, description[:1000], params, handler, timeout=timeout, source="bench"))
    return out


# -- one (condition, persona) job ---------------------------------------------------------------


@dataclass
class JobMemory:
    """What a job carries from session to session (rebuilt from items on resume)."""

    rag_turns: list[dict[str, Any]] = field(default_factory=list)
    judged_persona: str | None = None  # the persona the similarity below was judged for
    judged: Similarity | None = None


def _done_prefix(ctx: RunContext, condition: str, persona: BenchPersona) -> int:
    done = 0
    while done < len(persona.scenes) and (condition, persona.id, done) in ctx.previous:
        done += 1
    return done


def _memory(ctx: RunContext, condition: str, persona: BenchPersona, upto: int) -> JobMemory:
    memory = JobMemory()
    for i in range(upto):
        item = ctx.previous[(condition, persona.id, i)]
        memory.rag_turns += _turns(item.get("dialogue") or [], i)
        if item.get("similarity") is not None:
            memory.judged_persona = _persona_key(item.get("persona") or {})
            memory.judged = Similarity(
                item["similarity"],
                item.get("similarity_fields") or {},
                item.get("similarity_reason") or "",
                item.get("similarity_method") or "llm_judge",
            )
    return memory


async def run_job(ctx: RunContext, condition: str, persona: BenchPersona) -> None:
    done = _done_prefix(ctx, condition, persona)
    if done == len(persona.scenes):
        return
    state = JobState(ctx.out, condition, persona.id)
    start, _ = state.prepare(done)
    memory = _memory(ctx, condition, persona, start)
    for index in range(start, len(persona.scenes)):
        state.before_session(index)
        meter = SessionMeter()
        try:
            with metering(meter):
                item = await run_one(ctx, condition, persona, index, state.db, memory, meter)
        except BaseException as exc:
            reason = "interrupted" if isinstance(exc, asyncio.CancelledError) else repr(exc)
            append_jsonl(
                ctx.out / DISCARDED_FILE,
                [
                    {
                        "run": ctx.run_id,
                        "condition": condition,
                        "persona_id": persona.id,
                        "scene_index": index,
                        "reason": reason[:300],
                        "tokens": meter.as_dict(),
                        "at": time.time(),
                    }
                ],
            )
            raise
        state.after_session(index)
        async with ctx.lock:
            append_jsonl(ctx.out / ITEMS_FILE, [item])
            ctx.previous[(condition, persona.id, index)] = item
            ctx.flush_usage()
        ctx.progress()


async def run_one(
    ctx: RunContext,
    condition: str,
    persona: BenchPersona,
    index: int,
    db: Path,
    memory: JobMemory,
    meter: SessionMeter,
) -> dict[str, Any]:
    """One session on a freshly opened core, then the update and the persona measured."""
    prompt = SessionPrompt()
    core = PersonaCore(core_config(ctx, condition, db), plugins=[prompt], llm=ctx.pool["chatbot"])
    ident = Identity("bench", persona.id)  # no display name: it is the golden persona's Name
    await core.start(sweep=False)
    try:
        rejected: list[str] = []
        if condition == "golden_persona" and index == 0:
            edits = [
                Edit(name, "set", value, "golden persona")
                for name, value in flatten(persona.persona).items()
                if name in core.schema and value not in (None, "", [])
            ]
            _, rej = await core.edit_persona(ident, edits, source="bench")
            rejected = [r.reason for r in rej]
        item = await run_session(ctx, core, condition, persona, index, ident, prompt, memory, meter)
        if rejected:
            item["persona_rejected"] = rejected
        item["persona_update"] = await settle_updates(ctx, core, ident)
        learned = await core.persona(ident)
    finally:
        await core.close()
    learned_nested = learned.nested() if learned is not None else {}
    key = _persona_key(learned_nested)
    if memory.judged is not None and memory.judged_persona == key:
        similarity = memory.judged  # the persona did not change: same score, no call
    else:
        with usage_label("similarity_judge"):
            similarity = await judge_similarity(
                ctx.pool["judge"],
                learned_nested,
                persona.persona,
                max_tokens=ctx.settings.similarity_max_tokens,
            )
        if similarity.error is None:
            memory.judged_persona, memory.judged = key, similarity
    if similarity.error:
        item["errors"].append(f"similarity judge: {similarity.error}")
    lexical, per_field = lexical_similarity(learned_nested, persona.persona)
    item.update(
        {
            "similarity": similarity.overall,
            "similarity_fields": similarity.fields,
            "similarity_reason": similarity.reason,
            "similarity_method": similarity.method,
            "lexical_similarity": round(lexical, 6),
            "lexical_fields": {k: round(v, 4) for k, v in per_field.items()},
            "persona": learned_nested,
            "tokens": meter.as_dict(),
        }
    )
    return item


def _persona_key(persona: dict[str, Any]) -> str:
    return json.dumps(persona, ensure_ascii=False, sort_keys=True)


async def settle_updates(
    ctx: RunContext, core: PersonaCore, ident: Identity
) -> dict[str, Any] | None:
    """Let the persona update this session scheduled (if any) finish; retry a failed one up
    to ``update_retries`` times. The result is recorded on the item: a failed update is
    counted in the report, and the persona is measured without it."""
    await core.wait_for_updates()
    for _ in range(ctx.settings.update_retries):
        if _this_update(await core.export(ident)).get("status") != "pending":
            break
        await core.run_pending_updates()
    update = _this_update(await core.export(ident))
    if not update:
        return None
    status = update.get("status")
    return {
        "id": update.get("id"),
        "status": status,
        "attempts": update.get("attempts"),
        "error": update.get("error") if status != "done" else None,
        "failed": status != "done",
    }


def _this_update(export: dict[str, Any] | None) -> dict[str, Any]:
    """The update scheduled when the latest session ended ({} when none was)."""
    if not export or not export.get("sessions"):
        return {}
    update_id = export["sessions"][-1].get("update_id")
    if update_id is None:
        return {}
    for update in export.get("persona_updates") or []:
        if update.get("id") == update_id:
            return dict(update)
    return {}


def _turns(dialogue: list[dict[str, str]], session: int) -> list[dict[str, Any]]:
    turns = []
    for i, msg in enumerate(dialogue):
        if msg["role"] == "user":
            nxt = dialogue[i + 1] if i + 1 < len(dialogue) else None
            answer = nxt["content"] if nxt and nxt["role"] == "assistant" else ""
            turns.append({"session": session, "user": msg["content"], "assistant": answer})
    return turns


async def run_session(
    ctx: RunContext,
    core: PersonaCore,
    condition: str,
    persona: BenchPersona,
    index: int,
    ident: Identity,
    prompt: SessionPrompt,
    memory: JobMemory,
    meter: SessionMeter,
) -> dict[str, Any]:
    settings = ctx.settings
    scene = persona.scenes[index]
    chat_id = f"scene-{index}"
    started = time.monotonic()
    prompt.scene = scene.scene_desc if shows_scene(settings.chatbot_scene, scene) else ""
    tools = scene_tools(ctx, scene, core.tool_names())
    dialogue: list[dict[str, str]] = []
    tool_calls: list[dict[str, Any]] = []
    retrievers: list[str] = []
    item: dict[str, Any] = {
        "condition": condition,
        "persona_id": persona.id,
        "scene_index": index,
        "scene_type": scene.scene_type,
        "first_query": scene.first_query,
        "scene_shown": bool(prompt.scene),
    }
    user = SimulatedUser(
        ctx.pool["simulator"], persona.persona, scene, settings.lang, settings.simulator_max_tokens
    )
    judge_task: asyncio.Task[Any] | None = None
    satisfied, user_turns, errors = False, 0, []
    text = scene.first_query
    try:
        with core.extra_tools(tools):  # this scene's simulated APIs, for this session
            while True:
                user_turns += 1
                dialogue.append({"role": "user", "content": text})
                if condition == "rag" and ctx.retriever is not None:
                    prompt.retrieved, used = await ctx.retriever.top(
                        text, memory.rag_turns, settings.rag_top_k
                    )
                    retrievers.append(used)
                reply = await core.respond(ident, chat_id, text)
                tool_calls += [
                    {"name": r.name, "arguments": r.arguments, "error": r.error}
                    for r in reply.tool_results
                ]
                if not reply.ok:
                    why = meter.errors.get("chatbot")
                    errors.append(f"chatbot: {reply.error}" + (f" ({why})" if why else ""))
                    break
                dialogue.append({"role": "assistant", "content": reply.text})
                if judge_task is None:
                    item["first_response"] = reply.text
                    judge_task = asyncio.create_task(
                        judge_response(
                            ctx.pool["judge"],
                            persona.persona,
                            scene,
                            text,
                            reply.text,
                            max_tokens=settings.judge_max_tokens,
                        )
                    )
                verdict = await user.check(dialogue)
                if verdict.error:
                    errors.append(f"simulator: {verdict.error}")
                    break
                if verdict.satisfied:
                    satisfied = True
                    item["satisfied_reason"] = verdict.reason
                    break
                if user_turns >= settings.max_turns:
                    break
                follow = await user.follow_up(dialogue)
                if follow.error:
                    errors.append(f"simulator: {follow.error}")
                    break
                text = follow.message
            item["helpfulness"] = item["personalization"] = None
            if judge_task is not None:
                judgement = await judge_task
                item["helpfulness"] = judgement.helpfulness
                item["personalization"] = judgement.personalization
                item["judge_reason"] = judgement.reason
                if judgement.error:
                    errors.append(f"judge: {judgement.error}")
    finally:
        if judge_task is not None and not judge_task.done():
            judge_task.cancel()
    await core.end_session(ident, chat_id)
    memory.rag_turns += _turns(dialogue, index)
    if retrievers:
        fallbacks = [r for r in retrievers if r != ctx.retriever.label] if ctx.retriever else []
        item["retriever"] = fallbacks[-1] if fallbacks else retrievers[0]
    item.update(
        {
            "user_turns": user_turns,
            "satisfied": satisfied,
            # the paper's rule: user messages sent (at most max_turns); none for a session
            # cut short by a failing chatbot or simulator
            "utterances": None
            if any(e.startswith(("chatbot:", "simulator:")) for e in errors)
            else user_turns,
            "dialogue": dialogue,
            "tool_calls": tool_calls,
            "errors": errors,
            "seconds": round(time.monotonic() - started, 3),
        }
    )
    return item


# -- the whole run ------------------------------------------------------------------------------


@dataclass
class RunOptions:
    data: str
    out: str
    personas: int | None = None
    scenes: int | None = None
    conditions: list[str] | None = None
    k: list[int] | None = None


async def run_bench(config: Config, options: RunOptions) -> dict[str, Any]:
    """Run (or resume) an evaluation; write items.jsonl, results.json, report.md, plot.png."""
    settings, roles = load_bench(config)
    if options.conditions:
        settings.conditions = list(options.conditions)
    if options.k:
        settings.k = list(options.k)
    if options.personas is not None:
        settings.personas = options.personas
    if options.scenes is not None:
        settings.scenes = options.scenes
    conditions = settings.expanded_conditions()
    data_path = options.data or settings.data or str(shared_dir())
    personas = load_personas(data_path, limit=settings.personas, scenes=settings.scenes)
    if not personas:
        raise DataError(f"no personas in {data_path}")
    out = prepare_dir(options.out)
    previous: dict[Key, dict[str, Any]] = {}
    for item in read_jsonl(out / ITEMS_FILE):
        previous[(item["condition"], item["persona_id"], item["scene_index"])] = item
    pool = ModelPool(roles)
    needed: tuple[str, ...] = EVAL_ROLES
    if "rag" in conditions and settings.rag_retriever != "word_overlap":
        needed = (*EVAL_ROLES, "embedder")
    check_and_record(
        out,
        fingerprint(settings, config, pool, needed),
        data_fingerprint(personas),
        has_items=bool(previous),
    )
    run_id = time.strftime("%Y%m%dT%H%M%S", time.gmtime()) + f"-{time.time_ns() % 10**6:06d}"
    ctx = RunContext(settings, roles, config, pool, out, run_id, previous)
    jobs = [(c, p) for p in personas for c in conditions]
    total = sum(1 for c, p in jobs for i in range(len(p.scenes)) if (c, p.id, i) not in previous)
    started = time.time()
    failures: list[dict[str, str]] = []
    status = "interrupted"
    models = {role: pool.describe(role) for role in needed}
    try:
        if total:
            await pool.start(needed)
            if "rag" in conditions:
                ctx.retriever = await resolve_retriever(
                    settings.rag_retriever, pool["embedder"] if "embedder" in pool else None
                )
        bar = _progress(total)
        ctx.progress = lambda: bar.update(1) if bar is not None else None
        sem = asyncio.Semaphore(settings.concurrency)

        async def guarded(condition: str, persona: BenchPersona) -> None:
            async with sem:
                try:
                    await run_job(ctx, condition, persona)
                except Exception as exc:  # one broken job must not stop the others
                    log.exception("bench job %s / %s failed", condition, persona.id)
                    failures.append(
                        {
                            "condition": condition,
                            "persona_id": persona.id,
                            "error": f"{type(exc).__name__}: {exc}",
                        }
                    )

        try:
            await asyncio.gather(*(guarded(c, p) for c, p in jobs))
        finally:
            if bar is not None:
                bar.close()
        status = "complete" if not failures else "failed_jobs"
    finally:
        ctx.flush_usage()  # an interrupted run's tokens count too
        await pool.close()
        append_jsonl(
            out / RUNS_FILE,
            [
                {
                    "run": run_id,
                    "started": started,
                    "seconds": round(time.time() - started, 3),
                    "status": status,
                    "new_items": total,
                    "failed_jobs": failures,
                    "models": models,
                    "retriever": ctx.retriever.label if ctx.retriever else None,
                }
            ],
        )
    keys = {(c, p.id, i) for c, p in jobs for i in range(len(p.scenes))}
    items = [item for key, item in ctx.previous.items() if key in keys]
    results = report.build_results(
        items=items,
        conditions=conditions,
        settings=settings,
        public=public_config(settings, roles, pool, needed),
        models=models,
        data_path=str(data_path),
        personas=[p.id for p in personas],
        runs=list(read_jsonl(out / RUNS_FILE)),
        usage=list(read_jsonl(out / USAGE_FILE)),
        discarded=list(read_jsonl(out / DISCARDED_FILE)),
        prices={role: r.price for role, r in roles.items()},
    )
    report.write_all(results, out)
    return results


def _progress(total: int) -> Any:
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover - tqdm is in the bench extra
        return None
    return tqdm(total=total, unit="session", disable=not sys.stderr.isatty() or not total)
