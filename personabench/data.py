"""PersonaBench data: the released JSONL format (one persona per line) and JSONL helpers.

A line is ``{"id", "name", "persona": {Demographics, Personality, Pattern, Preference},
"scenes": [{scene_type, available_apis {name: {arguments, description}}, scene_desc,
expected_response, scene_context, personalized_query, neutralized_query}]}``. The generator
(:mod:`aipersona.personabench.generate`) writes the same schema.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from aipersona.core import AipersonaError

SHARED_DATA_NAMES = ("personabench.jsonl", "personas.jsonl")
_TAG_RE = re.compile(r"</?\s*neutralized_query\s*>", re.IGNORECASE)


class DataError(AipersonaError, ValueError):
    """The data file is missing or malformed."""


@dataclass
class Scene:
    scene_type: str
    scene_desc: str
    expected_response: str
    scene_context: str = ""
    personalized_query: str = ""
    neutralized_query: str = ""
    available_apis: dict[str, dict[str, Any]] = field(default_factory=dict)

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> Scene:
        if not isinstance(raw, dict):
            raise DataError(f"a scene must be an object, got {type(raw).__name__}")
        apis = raw.get("available_apis") or {}
        if isinstance(apis, list):  # [{"name", "arguments", "description"}]
            apis = {a["name"]: a for a in apis if isinstance(a, dict) and a.get("name")}
        if not isinstance(apis, dict):
            apis = {}
        clean_apis: dict[str, dict[str, Any]] = {}
        for name, spec in apis.items():
            spec = spec if isinstance(spec, dict) else {}
            args = spec.get("arguments") or []
            if isinstance(args, dict):
                args = list(args)
            clean_apis[str(name)] = {
                "arguments": [str(a) for a in args] if isinstance(args, list) else [],
                "description": str(spec.get("description") or ""),
            }
        return cls(
            scene_type=_text(raw.get("scene_type")),
            scene_desc=_text(raw.get("scene_desc")),
            expected_response=_text(raw.get("expected_response")),
            scene_context=_text(raw.get("scene_context")),
            personalized_query=_text(raw.get("personalized_query")),
            neutralized_query=_TAG_RE.sub("", _text(raw.get("neutralized_query"))).strip(),
            available_apis=clean_apis,
        )

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def first_query(self) -> str:
        return self.neutralized_query or self.personalized_query


@dataclass
class BenchPersona:
    id: str
    name: str
    persona: dict[str, dict[str, Any]]
    scenes: list[Scene] = field(default_factory=list)

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> BenchPersona:
        if not isinstance(raw, dict) or not isinstance(raw.get("persona"), dict):
            raise DataError("a persona line needs a 'persona' object")
        persona = raw["persona"]
        name = raw.get("name") or (persona.get("Demographics") or {}).get("Name") or ""
        pid = str(raw.get("id") or name)
        if not pid:
            raise DataError("a persona line needs an 'id' or a name")
        return cls(
            id=pid,
            name=str(name),
            persona=persona,
            scenes=[Scene.from_json(s) for s in raw.get("scenes") or []],
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "persona": self.persona,
            "scenes": [s.to_json() for s in self.scenes],
        }


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value.strip()
    return json.dumps(value, ensure_ascii=False)


def resolve_data_path(path: str | Path) -> Path:
    p = Path(path).expanduser()
    if p.is_dir():
        for name in SHARED_DATA_NAMES:
            if (p / name).is_file():
                return p / name
        raise DataError(f"no {' or '.join(SHARED_DATA_NAMES)} in {p}")
    if not p.is_file():
        raise DataError(f"data file not found: {p}")
    return p


def load_personas(path: str | Path, *, limit: int = 0, scenes: int = 0) -> list[BenchPersona]:
    """Load a PersonaBench JSONL file (or a directory holding one), in file order.

    ``limit`` keeps the first N personas, ``scenes`` the first N scenes of each (0 = all).
    """
    p = resolve_data_path(path)
    out: list[BenchPersona] = []
    for lineno, raw in enumerate(read_jsonl(p), 1):
        try:
            persona = BenchPersona.from_json(raw)
        except (DataError, KeyError, TypeError) as exc:
            raise DataError(f"{p}:{lineno}: {exc}") from None
        if scenes:
            persona.scenes = persona.scenes[:scenes]
        out.append(persona)
        if limit and len(out) >= limit:
            break
    return out


def read_jsonl(path: str | Path) -> Iterator[dict[str, Any]]:
    """Yield the objects of a JSONL file; a torn last line (interrupted write) is skipped."""
    p = Path(path)
    if not p.exists():
        return
    with p.open(encoding="utf-8") as fh:
        for line in fh:
            line = line.strip()
            if not line:
                continue
            try:
                value = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(value, dict):
                yield value


def append_jsonl(path: str | Path, items: Iterable[dict[str, Any]]) -> None:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    torn = False
    if p.exists() and p.stat().st_size:
        with p.open("rb") as fh:
            fh.seek(-1, 2)
            torn = fh.read(1) != b"\n"  # an interrupted write left half a line
    with p.open("a", encoding="utf-8") as fh:
        if torn:
            fh.write("\n")
        for item in items:
            fh.write(json.dumps(item, ensure_ascii=False, default=str) + "\n")
        fh.flush()


def load_seeds(path: str | Path) -> list[dict[str, Any]]:
    """Seed personas: a JSON list or JSONL of persona objects (nested, optional ``Name``)."""
    p = Path(path)
    text = p.read_text(encoding="utf-8")
    try:
        value = json.loads(text)
        items = value if isinstance(value, list) else [value]
    except json.JSONDecodeError:
        items = list(read_jsonl(p))
    return [i for i in items if isinstance(i, dict)]


def prepare_dir(path: str | Path) -> Path:
    """Create (if needed) and return an output directory."""
    p = Path(path)
    p.mkdir(parents=True, exist_ok=True)
    return p
