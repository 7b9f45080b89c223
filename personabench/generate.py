"""The PersonaBench generation pipeline (AI PERSONA, Sec. 4), in five resumable stages.

Each stage reads the previous stage's JSONL in the output directory and appends one line per
finished item to its own file; a rerun skips what is already there.

1. ``seeds.jsonl``: seed personas (the shared PersonaBench seeds or ``[bench.generate] seeds``).
2. ``personas.jsonl``: persona synthesis, self-instruct from a few seeds per call. The JSON is
   validated field by field against aipersona's persona schema (invalid fields dropped and
   recorded); a persona whose name or career repeats an earlier one (or a seed's) is rejected
   and asked for again (diversity).
3. ``scenes.jsonl``: per persona, common scenes drawn from ``scene_settings.json`` and adapted
   to the persona (with the device capabilities of ``scene_api_dict.json`` turned into
   ``available_apis``), plus persona-specific scenes; each with scene_context and
   expected_response.
4. ``queries.jsonl``: the user simulator writes the personalized query of each scene.
5. ``filtered.jsonl``: an LLM check drops unanswerable queries (the reason is kept) and writes
   the neutralized query (persona traits stripped, task specifics kept). The final dataset,
   ``personabench.jsonl``, has the released format and loads with
   :func:`aipersona.personabench.data.load_personas`; ``dropped.jsonl`` lists what was dropped.

A stage that ends with nothing (no persona, no scene, no query, no kept scene) is an error
that names the reason (the last rejection, or the drop reasons), never an empty dataset and
exit status 0. A prompt that does not fit the role's context window (``[llm.local] n_ctx`` for
the embedded model, ``[bench.ROLE] context_window`` elsewhere) stops the stage at once and
says by how much.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aipersona.core import (
    AipersonaError,
    Config,
    FieldValidationError,
    LLMClient,
    LLMError,
    PersonaSchema,
    flatten,
    nest,
)

from .clients import ModelPool, WindowError
from .data import (
    BenchPersona,
    DataError,
    Scene,
    append_jsonl,
    load_seeds,
    prepare_dir,
    read_jsonl,
)
from .roles import dumps, lang_name, marker
from .settings import BenchSettings, load_bench

log = logging.getLogger(__name__)

SHARED_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "personabench"
DATA_ENV = "AIPERSONA_PERSONABENCH_DATA"
FINAL_FILE = "personabench.jsonl"
REQUIRED_FIELDS = ("Demographics.Name", "Demographics.Career_Information")
WINDOW_HINT = (
    "; fewer examples ([bench.generate] examples_per_prompt) or a smaller "
    "[bench.generate] max_tokens also make it fit"
)


class GenerateError(AipersonaError, RuntimeError):
    """A generation stage produced nothing, or its prompt does not fit the model."""


def shared_dir() -> Path:
    """The released PersonaBench data: ``$AIPERSONA_PERSONABENCH_DATA``, else
    ``../shared/personabench`` next to the checkout."""
    override = os.environ.get(DATA_ENV)
    return Path(override).expanduser() if override else SHARED_DIR


# -- persona schema --------------------------------------------------------------------------------


def persona_json_schema(schema: PersonaSchema) -> dict[str, Any]:
    cats: dict[str, dict[str, Any]] = {}
    for spec in schema.ordered():
        cat = cats.setdefault(spec.category, {"type": "object", "properties": {}, "required": []})
        cat["properties"][spec.short_name] = spec.json_schema()
        cat["required"].append(spec.short_name)
    return {"type": "object", "properties": cats, "required": list(cats)}


def validate_persona(raw: Any, schema: PersonaSchema) -> tuple[dict[str, Any], list[str]]:
    """(clean flat values, problems). Unknown or invalid fields are dropped."""
    if not isinstance(raw, dict):
        return {}, ["the reply is not a JSON object"]
    if isinstance(raw.get("persona"), dict):
        raw = raw["persona"]
    clean: dict[str, Any] = {}
    problems: list[str] = []
    for name, value in flatten(raw).items():
        if name not in schema:
            problems.append(f"{name}: not a persona field")
            continue
        try:
            clean[name] = schema.get(name).validate(value)
        except FieldValidationError as exc:
            problems.append(str(exc))
    for name in REQUIRED_FIELDS:
        if name in schema and name not in clean:
            problems.append(f"{name}: missing")
    return clean, problems


def _key(text: Any) -> str:
    return "".join(str(text or "").split()).casefold()


# -- the pipeline -------------------------------------------------------------------------------


@dataclass
class GenerateOptions:
    out: str
    n_personas: int | None = None
    lang: str | None = None
    common_scenes: int | None = None
    specific_scenes: int | None = None
    seeds: str | None = None
    shared: str | None = None  # the directory with scene_settings.json, scene_api_dict.json


class Pipeline:
    def __init__(self, settings: BenchSettings, pool: ModelPool, out: Path, shared: Path) -> None:
        self.settings = settings
        self.gen = settings.generate
        self.pool = pool
        self.out = out
        self.shared = shared
        self.schema = PersonaSchema.build()
        self.lang = lang_name(settings.lang)
        self.sem = asyncio.Semaphore(settings.concurrency)
        self.problems: dict[str, str] = {}  # stage -> the last reason something was rejected

    @property
    def generator(self) -> LLMClient:
        return self.pool["generator"]

    async def _json(
        self, task: str, instructions: str, user: str, schema: dict[str, Any], *, llm: Any = None
    ) -> Any:
        role = "simulator" if llm is not None else "generator"
        system = f"{marker(role)} task={task}\n{instructions}"
        data, _ = await (llm or self.generator).complete_json(
            [{"role": "system", "content": system}, {"role": "user", "content": user}],
            schema=schema,
            name=task,
            temperature=self.gen.temperature,
            max_tokens=self.gen.max_tokens,
        )
        return data

    # stage 1 ----------------------------------------------------------------------------------

    def stage_seeds(self, seeds_file: str | None) -> list[dict[str, Any]]:
        path = self.out / "seeds.jsonl"
        done = list(read_jsonl(path))
        if done:
            return done
        files = (
            [Path(seeds_file)]
            if seeds_file
            else [self.shared / "seed_personas.json", self.shared / "seed_personas_extra.json"]
        )
        seeds: list[dict[str, Any]] = []
        seen: set[str] = set()
        for f in files:
            if not f.exists():
                continue
            for raw in load_seeds(f):
                persona = {k: v for k, v in raw.items() if isinstance(v, dict)}
                name = raw.get("Name") or (persona.get("Demographics") or {}).get("Name") or ""
                if name:
                    persona.setdefault("Demographics", {})["Name"] = name
                key = _key(json.dumps(persona, ensure_ascii=False, sort_keys=True))
                if key in seen:
                    continue
                seen.add(key)
                seeds.append({"id": f"seed-{len(seeds):03d}", "name": name, "persona": persona})
        if not seeds:
            raise FileNotFoundError(f"no seed personas found in {', '.join(map(str, files))}")
        append_jsonl(path, seeds)
        return seeds

    # stage 2 ----------------------------------------------------------------------------------

    async def stage_personas(self, seeds: list[dict[str, Any]], n: int) -> list[dict[str, Any]]:
        path = self.out / "personas.jsonl"
        done = list(read_jsonl(path))
        names = {_key(s["persona"].get("Demographics", {}).get("Name")) for s in seeds}
        careers = {
            _key(s["persona"].get("Demographics", {}).get("Career_Information")) for s in seeds
        }
        for p in done:
            demo = p["persona"].get("Demographics", {})
            names.add(_key(demo.get("Name")))
            careers.add(_key(demo.get("Career_Information")))
        names.discard("")
        careers.discard("")
        categories = dict.fromkeys(spec.category for spec in self.schema.ordered())
        instructions = (
            "You write realistic, diverse user personas for a benchmark of personalized AI "
            "assistants (self-instruct from examples). Create ONE new person who differs from "
            "the examples and from every name and career listed as taken. Fill every field; "
            "MBTI axes are single letters; list fields are lists of short "
            f"phrases. Write all values in {self.lang}. Fields:\n{self.schema.describe()}\n"
            "Reply with JSON only, nested by category: "
            + "{"
            + ", ".join(f'"{cat}": {{...}}' for cat in categories)
            + "}"
        )
        out = list(done)
        index = len(done)
        failures = 0
        last_problem = ""
        while len(out) < n:
            rng = random.Random(self.settings.seed * 100_003 + index * 7919 + failures)
            examples = rng.sample(seeds, min(self.gen.examples_per_prompt, len(seeds)))
            user = (
                "<examples>\n"
                + "\n".join(json.dumps(e["persona"], ensure_ascii=False) for e in examples)
                + "\n</examples>\n\n<taken_names>\n"
                + ", ".join(sorted(names))
                + "\n</taken_names>\n<taken_careers>\n"
                + "; ".join(sorted(careers))
                + "\n</taken_careers>\n\nWrite the new persona now."
            )
            problem = ""
            try:
                raw = await self._json(
                    "persona", instructions, user, persona_json_schema(self.schema)
                )
                clean, problems = validate_persona(raw, self.schema)
                name = _key(clean.get("Demographics.Name"))
                career = _key(clean.get("Demographics.Career_Information"))
                if any(p.endswith(": missing") for p in problems):
                    problem = "; ".join(problems)
                elif name in names or career in careers:
                    problem = f"duplicate name or career ({name} / {career})"
            except WindowError as exc:
                raise GenerateError(f"stage 2 (personas): {exc}{WINDOW_HINT}") from None
            except LLMError as exc:
                problem = str(exc)
            if problem:
                failures += 1
                last_problem = problem
                log.info("persona %d rejected: %s", index, problem)
                if failures >= self.gen.max_attempts * max(1, n - len(done)):
                    log.warning("persona synthesis gave up after %d failures", failures)
                    break
                continue
            names.add(name)
            careers.add(career)
            line = {
                "id": f"gen-{index:04d}",
                "name": clean["Demographics.Name"],
                "persona": nest(clean),
                "seed_ids": [e["id"] for e in examples],
                "dropped_fields": problems,
            }
            append_jsonl(path, [line])
            out.append(line)
            index += 1
        if not out:
            raise GenerateError(
                f"stage 2 (personas) made no persona in {failures} attempt(s); the last was "
                f"rejected because: {last_problem[:300]}"
            )
        return out[:n]

    # stage 3 ----------------------------------------------------------------------------------

    def _common_scenes(self) -> tuple[dict[str, str], dict[str, list[str]]]:
        settings_path = self.shared / "scene_settings.json"
        scenes = json.loads(settings_path.read_text(encoding="utf-8"))
        apis: dict[str, list[str]] = {}
        for line in read_jsonl(self.shared / "scene_api_dict.json"):
            for key, caps in line.items():
                name = key.replace(":", "：").split("：", 1)[0].strip()
                apis[name] = [c.strip() for c in caps if isinstance(c, str) and c.strip()]
        return scenes, apis

    SCENE_SCHEMA: dict[str, Any] = {  # noqa: RUF012
        "type": "object",
        "properties": {
            "scene_type": {"type": "string"},
            "scene_desc": {"type": "string"},
            "scene_context": {"type": "string"},
            "expected_response": {"type": "string"},
            "available_apis": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "name": {"type": "string"},
                        "arguments": {"type": "array", "items": {"type": "string"}},
                        "description": {"type": "string"},
                    },
                    "required": ["name", "arguments", "description"],
                },
            },
        },
        "required": [
            "scene_type",
            "scene_desc",
            "scene_context",
            "expected_response",
            "available_apis",
        ],
    }

    async def _scene(
        self, persona: dict[str, Any], brief: str, capabilities: list[str]
    ) -> dict[str, Any] | None:
        instructions = (
            "You design one test scene for a personalized AI assistant and the given user. "
            "scene_type: 'Name: one-line summary'. scene_desc: the user's situation and need, "
            "tied to the persona. scene_context: concrete facts the user knows (dates, places, "
            "numbers, constraints) that the assistant needs. expected_response: what an ideal "
            "personalized assistant does, and how it uses the persona. available_apis: 0-3 "
            "APIs (camelCase name, argument names, description) that the assistant could call "
            f"here, built from the device capabilities if given. Write all text in {self.lang}. "
            "Reply with JSON only."
        )
        user = (
            f"<persona>\n{dumps(persona)}\n</persona>\n\n<scene_brief>\n{brief}\n</scene_brief>"
            f"\n\n<device_capabilities>\n{', '.join(capabilities) or '(none)'}\n"
            "</device_capabilities>\n\nDesign the scene now."
        )
        for _ in range(self.gen.max_attempts):
            try:
                raw = await self._json("scene", instructions, user, self.SCENE_SCHEMA)
                scene = Scene.from_json(raw)
            except WindowError as exc:
                raise GenerateError(f"stage 3 (scenes): {exc}{WINDOW_HINT}") from None
            except (LLMError, TypeError, KeyError, DataError) as exc:
                self.problems["scenes"] = str(exc)
                log.info("scene rejected: %s", exc)
                continue
            if scene.scene_type and scene.scene_desc and scene.expected_response:
                return scene.to_json()
            self.problems["scenes"] = "no scene_type, scene_desc or expected_response"
        return None

    async def stage_scenes(self, personas: list[dict[str, Any]]) -> None:
        path = self.out / "scenes.jsonl"
        done = {line["id"] for line in read_jsonl(path)}
        common, apis = self._common_scenes()

        async def one(p: dict[str, Any]) -> None:
            async with self.sem:
                rng = random.Random(f"{self.settings.seed}:{p['id']}")
                picked = rng.sample(sorted(common), min(self.gen.common_scenes, len(common)))
                scenes: list[dict[str, Any]] = []
                for name in picked:
                    brief = f"Common scene '{name}': {common[name]}. Adapt it to this persona."
                    scene = await self._scene(p["persona"], brief, apis.get(name, []))
                    if scene:
                        scenes.append(scene)
                for _ in range(self.gen.specific_scenes):
                    taken = "; ".join(s["scene_type"] for s in scenes) or "(none)"
                    brief = (
                        "A persona-specific scene: invent a situation that arises from this "
                        "person's career, interests or habits and would not fit most users. "
                        f"It must differ from these scenes: {taken}"
                    )
                    scene = await self._scene(p["persona"], brief, [])
                    if scene:
                        scenes.append(scene)
                if scenes:  # a persona without any scene is tried again on the next run
                    append_jsonl(path, [{"id": p["id"], "scenes": scenes}])

        await _all(one(p) for p in personas if p["id"] not in done)
        ids = {p["id"] for p in personas}
        if not any(line["id"] in ids for line in read_jsonl(path)):
            raise GenerateError(
                "stage 3 (scenes) made no scene for any persona; the last was rejected "
                f"because: {self.problems.get('scenes', 'unknown')[:300]}"
            )

    # stage 4 ----------------------------------------------------------------------------------

    async def stage_queries(self, personas: list[dict[str, Any]]) -> None:
        path = self.out / "queries.jsonl"
        done = {line["id"] for line in read_jsonl(path)}
        scenes = {line["id"]: line["scenes"] for line in read_jsonl(self.out / "scenes.jsonl")}
        instructions = (
            "You are a user simulator: you ARE the person in <persona>. Write the first message "
            "you would send to your AI assistant in this scene: natural and in your own voice, "
            "so that it may show who you are, and include the concrete facts from the context "
            f"the assistant needs. Write it in {self.lang}. Reply with JSON only: "
            '{"query": "<the message>"}'
        )
        schema = {
            "type": "object",
            "properties": {"query": {"type": "string"}},
            "required": ["query"],
        }

        async def one(p: dict[str, Any]) -> None:
            async with self.sem:
                out = []
                for scene in scenes.get(p["id"], []):
                    user = (
                        f"<persona>\n{dumps(p['persona'])}\n</persona>\n\n<scene>\n"
                        f"{scene['scene_type']}\n{scene['scene_desc']}\n</scene>\n\n<context>\n"
                        f"{scene['scene_context']}\n</context>\n\nWrite your message now."
                    )
                    try:
                        raw = await self._json(
                            "query", instructions, user, schema, llm=self.pool["simulator"]
                        )
                    except WindowError as exc:
                        raise GenerateError(f"stage 4 (queries): {exc}") from None
                    except LLMError as exc:
                        self.problems["queries"] = str(exc)
                        log.info("query generation failed: %s", exc)
                        return  # retried on the next run
                    query = str(raw.get("query") or "").strip() if isinstance(raw, dict) else ""
                    out.append({**scene, "personalized_query": query})
                append_jsonl(path, [{"id": p["id"], "scenes": out}])

        await _all(one(p) for p in personas if p["id"] not in done and p["id"] in scenes)
        written = [
            s.get("personalized_query")
            for line in read_jsonl(path)
            if line["id"] in scenes
            for s in line["scenes"]
        ]
        if not any(written):
            why = self.problems.get("queries") or "every query the user simulator wrote was empty"
            raise GenerateError(f"stage 4 (queries) wrote no query; {why[:300]}")

    # stage 5 ----------------------------------------------------------------------------------

    async def stage_filter(self, personas: list[dict[str, Any]]) -> list[BenchPersona]:
        path = self.out / "filtered.jsonl"
        done = {line["id"] for line in read_jsonl(path)}
        queries = {line["id"]: line["scenes"] for line in read_jsonl(self.out / "queries.jsonl")}
        instructions = (
            "You check test queries for a personalized AI assistant. (1) answerable: can an "
            "assistant answer the query reasonably from the query, the conversation it may "
            "start, and the listed APIs? It is NOT answerable when it is empty, incoherent, "
            "does not fit the scene, or needs information nobody could provide. (2) "
            "neutralized_query: rewrite the query with every trace of the user's persona "
            "removed (identity, job, personality, interests, preferred style) while keeping all "
            "task specifics (dates, places, numbers, constraints), so a generic user could have "
            f"sent it. Write it in {self.lang}. Reply with JSON only: "
            '{"answerable": true|false, "reason": "<why>", "neutralized_query": "<text>"}'
        )
        schema = {
            "type": "object",
            "properties": {
                "answerable": {"type": "boolean"},
                "reason": {"type": "string"},
                "neutralized_query": {"type": "string"},
            },
            "required": ["answerable", "reason", "neutralized_query"],
        }

        async def one(p: dict[str, Any]) -> None:
            async with self.sem:
                kept, dropped = [], []
                for i, scene in enumerate(queries.get(p["id"], [])):
                    query = scene.get("personalized_query", "")
                    if not query:
                        dropped.append({"scene_index": i, "reason": "empty query"})
                        continue
                    user = (
                        f"<persona>\n{dumps(p['persona'])}\n</persona>\n\n<scene>\n"
                        f"{scene['scene_type']}\n{scene['scene_desc']}\n</scene>\n\n"
                        f"<apis>\n{dumps(scene.get('available_apis') or {})}\n</apis>\n\n"
                        f"<query>\n{query}\n</query>\n\nReturn the JSON now."
                    )
                    try:
                        raw = await self._json("filter", instructions, user, schema)
                    except WindowError as exc:
                        raise GenerateError(f"stage 5 (filter): {exc}") from None
                    except LLMError as exc:
                        log.info("filter failed: %s", exc)
                        return  # retried on the next run
                    raw = raw if isinstance(raw, dict) else {}
                    answerable = raw.get("answerable")
                    if isinstance(answerable, str):
                        answerable = answerable.strip().lower() in ("true", "yes")
                    neutral = str(raw.get("neutralized_query") or "").strip()
                    reason = str(raw.get("reason") or "")
                    if not answerable:
                        dropped.append(
                            {"scene_index": i, "scene_type": scene["scene_type"], "reason": reason}
                        )
                    elif not neutral:
                        dropped.append(
                            {
                                "scene_index": i,
                                "scene_type": scene["scene_type"],
                                "reason": "no neutralized query",
                            }
                        )
                    else:
                        kept.append({**scene, "neutralized_query": neutral})
                line = BenchPersona(
                    p["id"], p["name"], p["persona"], [Scene.from_json(s) for s in kept]
                ).to_json()
                append_jsonl(path, [{**line, "dropped": dropped}])

        await _all(one(p) for p in personas if p["id"] not in done and p["id"] in queries)
        order = {p["id"]: n for n, p in enumerate(personas)}
        final = sorted(
            (line for line in read_jsonl(path) if line["id"] in order),
            key=lambda line: order[line["id"]],
        )
        result = []
        final_path, dropped_path = self.out / FINAL_FILE, self.out / "dropped.jsonl"
        final_path.unlink(missing_ok=True)
        dropped_path.unlink(missing_ok=True)
        for line in final:
            append_jsonl(dropped_path, [{"id": line["id"], **d} for d in line["dropped"]])
            persona = BenchPersona.from_json(line)
            if persona.scenes:
                result.append(persona)
                append_jsonl(final_path, [persona.to_json()])
        if not result:
            reasons = Counter(
                str(d.get("reason") or "?")[:120] for line in final for d in line["dropped"]
            )
            shown = "; ".join(f"{r} ({n}x)" for r, n in reasons.most_common(3)) or "none given"
            raise GenerateError(f"stage 5 (filter) kept no scene; drop reasons: {shown}")
        return result


async def generate(config: Config, options: GenerateOptions) -> dict[str, Any]:
    """Run (or resume) the five stages; return a summary of what was written."""
    settings, roles = load_bench(config)
    if options.lang:
        settings.lang = options.lang
    gen = settings.generate
    if options.n_personas is not None:
        gen.n_personas = options.n_personas
    if options.common_scenes is not None:
        gen.common_scenes = options.common_scenes
    if options.specific_scenes is not None:
        gen.specific_scenes = options.specific_scenes
    out = prepare_dir(options.out)
    shared = Path(options.shared) if options.shared else shared_dir()
    pool = ModelPool(roles)
    models = {role: pool.describe(role) for role in ("generator", "simulator")}
    summary: dict[str, Any] = {"out": str(out), "lang": settings.lang, "models": models}
    status = "interrupted"
    try:
        await pool.start(("generator", "simulator"))
        pipe = Pipeline(settings, pool, out, shared)
        seeds = pipe.stage_seeds(options.seeds or gen.seeds or None)
        personas = await pipe.stage_personas(seeds, gen.n_personas)
        await pipe.stage_scenes(personas)
        await pipe.stage_queries(personas)
        final = await pipe.stage_filter(personas)
        status = "complete"
        summary.update(
            {
                "seeds": len(seeds),
                "personas": len(personas),
                "final_personas": len(final),
                "scenes": sum(len(p.scenes) for p in final),
                "dropped": len(list(read_jsonl(out / "dropped.jsonl"))),
                "dataset": str(out / FINAL_FILE),
            }
        )
    except GenerateError as exc:
        status = f"failed: {exc}"
        raise
    finally:
        summary["usage"] = pool.take_usage()  # the tokens of a failed or interrupted run too
        await pool.close()
        append_jsonl(out / "generate_runs.jsonl", [{**summary, "status": status}])
    return summary


async def _all(coros: Any) -> None:
    """Run the coroutines together; the first error cancels the others and is raised."""
    try:
        async with asyncio.TaskGroup() as group:
            for coro in coros:
                group.create_task(coro)
    except* GenerateError as errors:
        raise errors.exceptions[0] from None
