"""The evaluation protocol (AI PERSONA, Sec. 5) over PersonaBench data.

Conditions:

- ``no_persona``: the chatbot with an empty persona that never learns;
- ``golden_persona``: the chatbot given the golden persona (written through ``edit_persona``);
- ``rag``: empty persona, plus the top past turns of this user (earlier sessions) retrieved by
  lexical overlap with the current message and put into the system prompt (a plugin's
  ``aipersona_build_prompt`` section);
- ``learned_kN``: starts from an EMPTY persona; the real PersonaCore optimizer updates it every
  N sessions (``persona.update_every = N``), so later sessions use what was learned.

For each condition and persona a PersonaCore with its own SQLite file runs the persona's scenes
in file order, one session each. The first user turn is the scene's neutralized query; the user
simulator writes the follow-ups and decides when it is satisfied (at most ``max_turns`` user
utterances). The scene's ``available_apis`` are offered as tools (``PersonaCore.extra_tools``) for
that session and answered by the tool simulator. The judge scores the FIRST response of each
session. Every finished session is appended to ``items.jsonl`` and skipped on a rerun.
"""

from __future__ import annotations

import asyncio
import logging
import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aipersona.core import Config, Edit, Identity, PersonaCore, Tool, ToolContext, flatten, hookimpl

from . import report
from .data import BenchPersona, Scene, append_jsonl, load_personas, prepare_dir, read_jsonl
from .generate import shared_dir
from .metrics import persona_similarity, tokens, utterances_to_satisfaction
from .roles import (
    CHATBOT_PROMPT,
    RAG_PREAMBLE,
    ModelPool,
    judge_response,
    simulate_tool,
    simulate_user,
)
from .settings import BenchSettings, RoleSettings, load_bench, parse_learned, public_config

log = logging.getLogger(__name__)

PERSONA_TOOLS = ("persona",)  # the built-in persona tool (all its ops)
ITEMS_FILE = "items.jsonl"
_TOOL_NAME_RE = re.compile(r"[^A-Za-z0-9_-]")


# -- the conversation-RAG baseline --------------------------------------------------------------


def retrieve(query: str, turns: list[dict[str, Any]], top_k: int) -> list[dict[str, Any]]:
    """The ``top_k`` past turns with the most query tokens in common (ties: most recent first),
    returned in chronological order. Turns sharing no token are never returned."""
    q = tokens(query)
    scored = []
    for pos, turn in enumerate(turns):
        overlap = len(q & tokens(f"{turn.get('user', '')} {turn.get('assistant', '')}"))
        if overlap:
            scored.append((overlap, pos))
    best = sorted(scored, key=lambda sp: (-sp[0], -sp[1]))[:top_k]
    return [turns[pos] for _, pos in sorted(best, key=lambda sp: sp[1])]


class RagPlugin:
    """Adds the retrieved past turns of the current user to the chatbot's system prompt."""

    def __init__(self, top_k: int) -> None:
        self.top_k = top_k
        self.turns: list[dict[str, Any]] = []
        self.query = ""

    @hookimpl
    def aipersona_build_prompt(self, persona: Any, context: ToolContext) -> str | None:
        hits = retrieve(self.query, self.turns, self.top_k)
        if not hits:
            return None
        lines = [RAG_PREAMBLE]
        for hit in hits:
            lines.append(f"- user: {hit['user']}\n  assistant: {hit['assistant']}")
        return "\n".join(lines)


# -- one (condition, persona) job ---------------------------------------------------------------


@dataclass
class RunContext:
    settings: BenchSettings
    roles: dict[str, RoleSettings]
    base_config: Config
    pool: ModelPool
    out: Path
    done: set[tuple[str, str, int]] = field(default_factory=set)
    previous: dict[tuple[str, str, int], dict[str, Any]] = field(default_factory=dict)
    progress: Callable[[], None] = lambda: None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)[:80] or "x"


def core_config(ctx: RunContext, condition: str, persona_id: str) -> Config:
    """The chatbot's Config for one (condition, persona): own database, chatbot model."""
    cfg = ctx.base_config.model_copy(deep=True)
    cfg.llm = ctx.roles["chatbot"].llm.model_copy(deep=True)
    if ctx.pool.is_local("chatbot"):
        cfg.llm.tools = False  # the embedded 135M model cannot call tools
    db = ctx.out / "state" / _safe(condition) / f"{_safe(persona_id)}.db"
    db.parent.mkdir(parents=True, exist_ok=True)
    cfg.database.path = str(db)
    k = parse_learned(condition)
    cfg.persona.update_every = k if k is not None else 1_000_000
    cfg.sessions.idle_minutes = 10.0**7
    cfg.sessions.history_messages = max(cfg.sessions.history_messages, 2 * ctx.settings.max_turns)
    cfg.chat.system_prompt = ctx.settings.chatbot_prompt or CHATBOT_PROMPT
    cfg.plugins.modules = []
    cfg.plugins.entry_points = False
    cfg.tools.enabled = True
    if not ctx.settings.persona_tools:
        cfg.tools.disabled = sorted({*cfg.tools.disabled, *PERSONA_TOOLS})
    return cfg


def scene_tools(
    ctx: RunContext, persona: BenchPersona, scene: Scene, taken: set[str]
) -> list[Tool]:
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
                persona=persona.persona,
                scene=scene,
                max_tokens=ctx.settings.tool_max_tokens,
            )

        description = spec.get("description") or raw_name
        out.append(Tool(name, description[:1000], params, handler, timeout=timeout, source="bench"))
    return out


async def run_job(ctx: RunContext, condition: str, persona: BenchPersona) -> None:
    pending = [i for i in range(len(persona.scenes)) if (condition, persona.id, i) not in ctx.done]
    if not pending:
        return
    rag = RagPlugin(ctx.settings.rag_top_k) if condition == "rag" else None
    if rag is not None:  # earlier sessions of an interrupted run
        for i in range(len(persona.scenes)):
            prev = ctx.previous.get((condition, persona.id, i))
            if prev is not None:
                rag.turns += _turns(prev.get("dialogue") or [], i)
    ident = Identity("bench", persona.id, persona.name)
    cfg = core_config(ctx, condition, persona.id)
    core = PersonaCore(cfg, plugins=[rag] if rag else [], llm=ctx.pool["chatbot"])
    await core.start(sweep=False)
    try:
        await core.wait_for_updates()
        rejected: list[str] = []
        if condition == "golden_persona":
            edits = [
                Edit(name, "set", value, "golden persona")
                for name, value in flatten(persona.persona).items()
                if name in core.schema and value not in (None, "", [])
            ]
            _, rej = await core.edit_persona(ident, edits, source="bench")
            rejected = [r.reason for r in rej]
        for index in pending:
            item = await run_session(ctx, core, condition, persona, index, ident, rag)
            if rejected:
                item["persona_rejected"] = rejected
            async with ctx.lock:
                append_jsonl(ctx.out / ITEMS_FILE, [item])
                ctx.done.add((condition, persona.id, index))
            ctx.progress()
    finally:
        await core.close()


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
    rag: RagPlugin | None,
) -> dict[str, Any]:
    settings = ctx.settings
    scene = persona.scenes[index]
    chat_id = f"scene-{index}"
    started = time.monotonic()
    tools = scene_tools(ctx, persona, scene, core.tool_names())
    dialogue: list[dict[str, str]] = []
    tool_calls: list[dict[str, Any]] = []
    item: dict[str, Any] = {
        "condition": condition,
        "persona_id": persona.id,
        "scene_index": index,
        "scene_type": scene.scene_type,
        "first_query": scene.first_query,
    }
    chat_tokens = {"prompt_tokens": 0, "completion_tokens": 0}
    judge_task: asyncio.Task[Any] | None = None
    satisfied, user_turns, errors = False, 0, []
    text = scene.first_query
    try:
        with core.extra_tools(tools):  # this scene's simulated APIs, for this session
            while text:
                user_turns += 1
                dialogue.append({"role": "user", "content": text})
                if rag is not None:
                    rag.query = text
                reply = await core.respond(ident, chat_id, text)
                chat_tokens["prompt_tokens"] += reply.prompt_tokens
                chat_tokens["completion_tokens"] += reply.completion_tokens
                tool_calls += [
                    {"name": r.name, "arguments": r.arguments, "error": r.error}
                    for r in reply.tool_results
                ]
                if not reply.ok:
                    errors.append(f"chatbot: {reply.error}")
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
                verdict = await simulate_user(
                    ctx.pool["simulator"],
                    persona.persona,
                    scene,
                    dialogue,
                    lang=settings.lang,
                    max_tokens=settings.simulator_max_tokens,
                )
                if verdict.error:
                    errors.append(f"simulator: {verdict.error}")
                if verdict.satisfied:
                    satisfied = True
                    item["satisfied_reason"] = verdict.reason
                    break
                if user_turns >= settings.max_turns:
                    break
                text = verdict.reply
            if judge_task is not None:
                judgement = await judge_task
                item["helpfulness"] = judgement.helpfulness
                item["personalization"] = judgement.personalization
                item["judge_reason"] = judgement.reason
                if judgement.error:
                    errors.append(f"judge: {judgement.error}")
            else:
                item["helpfulness"] = item["personalization"] = None
    finally:
        if judge_task is not None and not judge_task.done():
            judge_task.cancel()
    await core.end_session(ident, chat_id)
    await core.wait_for_updates()
    if rag is not None:
        rag.turns += _turns(dialogue, index)
    learned = await core.persona(ident)
    learned_nested = learned.nested() if learned is not None else {}
    similarity, per_field = persona_similarity(learned_nested, persona.persona)
    item.update(
        {
            "user_turns": user_turns,
            "satisfied": satisfied,
            # a session cut short by a failing chatbot or simulator has no utterance count
            "utterances": None
            if any(e.startswith(("chatbot:", "simulator:")) for e in errors)
            else utterances_to_satisfaction(user_turns, satisfied, settings.max_turns),
            "persona_similarity": round(similarity, 6),
            "persona_similarity_fields": {k: round(v, 4) for k, v in per_field.items()},
            "persona": learned_nested,
            "dialogue": dialogue,
            "tool_calls": tool_calls,
            "chatbot_tokens": chat_tokens,
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
    out = prepare_dir(options.out)
    previous: dict[tuple[str, str, int], dict[str, Any]] = {}
    for item in read_jsonl(out / ITEMS_FILE):
        previous[(item["condition"], item["persona_id"], item["scene_index"])] = item
    pool = ModelPool(roles)
    ctx = RunContext(settings, roles, config, pool, out, set(previous), previous)
    jobs = [(c, p) for p in personas for c in conditions]
    total = sum(1 for c, p in jobs for i in range(len(p.scenes)) if (c, p.id, i) not in ctx.done)
    started = time.time()
    failures: list[dict[str, str]] = []
    if total:
        await pool.start(("chatbot", "simulator", "judge", "tool_simulator"))
    try:
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
        usage = pool.usage()
    finally:
        await pool.close()
    run_info = {
        "started": started,
        "seconds": round(time.time() - started, 3),
        "new_items": total,
        "failed_jobs": failures,
        "usage": usage,
    }
    append_jsonl(out / "runs.jsonl", [run_info])
    keys = {(c, p.id, i) for c, p in jobs for i in range(len(p.scenes))}
    items = [
        i
        for i in read_jsonl(out / ITEMS_FILE)
        if (i["condition"], i["persona_id"], i["scene_index"]) in keys
    ]
    results = report.build_results(
        items=items,
        conditions=conditions,
        settings=settings,
        public=public_config(settings, roles),
        data_path=str(data_path),
        personas=[p.id for p in personas],
        runs=list(read_jsonl(out / "runs.jsonl")),
    )
    report.write_all(results, out)
    return results


def _progress(total: int) -> Any:
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover - tqdm is in the bench extra
        return None
    return tqdm(total=total, unit="session", disable=not sys.stderr.isatty() or not total)
