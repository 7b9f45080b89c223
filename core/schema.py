"""The persona schema: which fields a persona has, their types, and how values are validated.

Field names are ``Category.Field`` (e.g. ``Demographics.Age``). The built-in fields follow the
AI PERSONA paper and its released PersonaBench data; plugins add more through the
``aipersona_persona_fields`` hook.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from .errors import FieldValidationError
from .injection import instruction_reason

FieldType = Literal["string", "integer", "string_list", "enum"]

DEFAULT_MAX_CHARS = 500
DEFAULT_MAX_ITEMS = 20

_NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,63}\.[A-Za-z][A-Za-z0-9_]{0,63}$")


@dataclass(frozen=True)
class FieldSpec:
    """One persona field."""

    name: str
    type: FieldType = "string"
    description: str = ""
    choices: tuple[str, ...] = ()
    max_chars: int = DEFAULT_MAX_CHARS
    max_items: int = DEFAULT_MAX_ITEMS
    minimum: int | None = None
    maximum: int | None = None
    source: str = "builtin"

    def __post_init__(self) -> None:
        if not _NAME_RE.match(self.name):
            raise FieldValidationError(
                f"field name {self.name!r} must look like Category.Field (letters, digits, _)"
            )
        if self.type == "enum" and not self.choices:
            raise FieldValidationError(f"enum field {self.name} needs choices")

    @property
    def category(self) -> str:
        return self.name.split(".", 1)[0]

    @property
    def short_name(self) -> str:
        return self.name.split(".", 1)[1]

    def json_schema(self) -> dict[str, Any]:
        """JSON Schema of a value of this field (used in tool and optimizer schemas)."""
        if self.type == "integer":
            out: dict[str, Any] = {"type": "integer"}
            if self.minimum is not None:
                out["minimum"] = self.minimum
            if self.maximum is not None:
                out["maximum"] = self.maximum
            return out
        if self.type == "string_list":
            return {
                "type": "array",
                "items": {"type": "string", "maxLength": self.max_chars},
                "maxItems": self.max_items,
            }
        if self.type == "enum":
            return {"type": "string", "enum": list(self.choices)}
        return {"type": "string", "maxLength": self.max_chars}

    # -- validation -------------------------------------------------------------------------

    def _clean_text(self, value: Any, what: str = "value") -> str:
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise FieldValidationError(f"{self.name}: {what} must be text, got {_kind(value)}")
        text = clean_text(str(value))
        if not text:
            raise FieldValidationError(f"{self.name}: {what} is empty")
        if len(text) > self.max_chars:
            raise FieldValidationError(
                f"{self.name}: {what} is {len(text)} characters, the limit is {self.max_chars}"
            )
        # Values are facts about the user. Text that reads as an order to the assistant is
        # not a fact; it is refused before it can reach a prompt (defence in depth: prompts
        # also quote values as escaped JSON data).
        reason = instruction_reason(text)
        if reason is not None:
            raise FieldValidationError(
                f"{self.name}: {what} reads as an instruction to the assistant ({reason}), "
                "not a fact about the user"
            )
        return text

    def validate(self, value: Any) -> Any:
        """Return the normalized value, or raise FieldValidationError."""
        if self.type == "integer":
            if isinstance(value, bool):
                raise FieldValidationError(f"{self.name}: value must be an integer, got boolean")
            if isinstance(value, str) and re.fullmatch(r"\s*-?\d{1,12}\s*", value):
                value = int(value)
            if isinstance(value, float) and value.is_integer():
                value = int(value)
            if not isinstance(value, int):
                raise FieldValidationError(
                    f"{self.name}: value must be an integer, got {_kind(value)}"
                )
            if self.minimum is not None and value < self.minimum:
                raise FieldValidationError(f"{self.name}: {value} is below {self.minimum}")
            if self.maximum is not None and value > self.maximum:
                raise FieldValidationError(f"{self.name}: {value} is above {self.maximum}")
            return value
        if self.type == "string_list":
            items = [value] if isinstance(value, str) else value
            if not isinstance(items, list):
                raise FieldValidationError(
                    f"{self.name}: value must be a list of strings, got {_kind(value)}"
                )
            out: list[str] = []
            seen: set[str] = set()
            for item in items:
                text = self._clean_text(item, "list item")
                if item_key(text) not in seen:  # the first wording of an item is kept
                    seen.add(item_key(text))
                    out.append(text)
            if not out:
                raise FieldValidationError(f"{self.name}: list is empty")
            if len(out) > self.max_items:
                raise FieldValidationError(
                    f"{self.name}: {len(out)} items, the limit is {self.max_items}"
                )
            return out
        if self.type == "enum":
            text = self._clean_text(value)
            for choice in self.choices:
                if text.casefold() == choice.casefold():
                    return choice
            raise FieldValidationError(
                f"{self.name}: {text!r} is not one of {', '.join(self.choices)}"
            )
        return self._clean_text(value)


def clean_text(text: str) -> str:
    """Drop control and format characters (keeping newlines and tabs) and trim."""
    if text.replace("\n", "").replace("\t", "").isprintable():
        # fast path (C speed): no character of a C* category at all, nothing to drop
        return text.strip()
    kept = [
        ch
        for ch in text
        if ch in "\n\t" or unicodedata.category(ch) not in ("Cc", "Cf", "Cs", "Co", "Cn")
    ]
    return "".join(kept).strip()


def item_key(text: str) -> str:
    """What makes two list items the same item: case, spacing and a final full stop aside
    ("Has a cat." and "has a  cat" are one item)."""
    return " ".join(text.casefold().split()).rstrip(".;,! ")


def _kind(value: Any) -> str:
    return {dict: "an object", list: "a list", type(None): "null"}.get(
        type(value), type(value).__name__
    )


def _mbti(name: str, a: str, b: str) -> FieldSpec:
    return FieldSpec(f"Personality.{name}", "enum", "MBTI axis", choices=(a, b), max_chars=1)


MAX_FACTS = 30

BUILTIN_FIELDS: tuple[FieldSpec, ...] = (
    FieldSpec("Demographics.Name", "string", "what the user wants to be called", max_chars=100),
    FieldSpec("Demographics.Age", "integer", "in years", minimum=0, maximum=130),
    FieldSpec("Demographics.Gender", "string", "as the user states it", max_chars=50),
    FieldSpec("Demographics.Nationality", "string", "nationality or country", max_chars=100),
    FieldSpec(
        "Demographics.Language",
        "string_list",
        "languages the user speaks or prefers, most preferred first",
        max_chars=50,
        max_items=10,
    ),
    FieldSpec(
        "Demographics.Career_Information",
        "string",
        "occupation, employer type, field of study or work",
    ),
    FieldSpec(
        "Demographics.Location",
        "string",
        "where the user lives now (city, region or country)",
        max_chars=100,
    ),
    _mbti("Extraversion_or_Introversion", "E", "I"),
    _mbti("Sensing_or_Intuition", "S", "N"),
    _mbti("Thinking_or_Feeling", "T", "F"),
    _mbti("Judging_or_Perceiving", "J", "P"),
    FieldSpec(
        "Personality.Values_and_Interests",
        "string_list",
        "values, hobbies and interests, one short phrase each",
        max_chars=200,
    ),
    FieldSpec(
        "Pattern.Behavior_Engagement_Pattern",
        "string",
        "what the user has recently been engaged with or asking about",
    ),
    FieldSpec("Pattern.Usage_Pattern", "string", "how and how often the user uses the assistant"),
    FieldSpec("Pattern.Emotion_Pattern", "string", "typical emotional tone and needs"),
    FieldSpec("Pattern.Purchase_Pattern", "string", "buying habits and priorities"),
    FieldSpec("Preference.Preferred_Styles", "string", "answer style: tone, length, detail"),
    FieldSpec("Preference.Preferred_Formats", "string", "lists, tables, code, ..."),
    FieldSpec(
        "Preference.Preferred_Workflows",
        "string",
        "how the user likes to work with the assistant (step by step, options, ...)",
    ),
    FieldSpec(
        "Memory.Facts",
        "string_list",
        "lasting facts no other field holds: family, partner, pets, ongoing projects, "
        f"important dates; one short fact each, at most {MAX_FACTS}",
        max_chars=200,
        max_items=MAX_FACTS,
    ),
)

CATEGORY_ORDER = ("Demographics", "Personality", "Pattern", "Preference", "Memory")


@dataclass
class PersonaSchema:
    """The set of fields in force: built-ins plus plugin fields."""

    fields: dict[str, FieldSpec] = field(default_factory=dict)

    @classmethod
    def build(
        cls, extra: Iterable[FieldSpec] = (), *, disabled: Iterable[str] = ()
    ) -> PersonaSchema:
        schema = cls()
        for spec in (*BUILTIN_FIELDS, *extra):
            if spec.name in schema.fields and schema.fields[spec.name] != spec:
                raise FieldValidationError(
                    f"field {spec.name} is defined twice ({schema.fields[spec.name].source} "
                    f"and {spec.source})"
                )
            schema.fields[spec.name] = spec
        for name in disabled:
            schema.fields.pop(name, None)
        return schema

    def __contains__(self, name: object) -> bool:
        return name in self.fields

    def get(self, name: str) -> FieldSpec:
        spec = self.fields.get(name)
        if spec is None:
            spec = self._by_loose_name(name)
        if spec is None:
            raise FieldValidationError(f"unknown persona field {name!r}")
        return spec

    def _by_loose_name(self, name: str) -> FieldSpec | None:
        """Accept ``Age`` or ``demographics.age`` when exactly one field matches."""
        key = name.strip().casefold()
        matches = [
            s for s in self.fields.values() if key in (s.name.casefold(), s.short_name.casefold())
        ]
        return matches[0] if len(matches) == 1 else None

    def ordered(self) -> list[FieldSpec]:
        def order(spec: FieldSpec) -> tuple[int, str]:
            cat = spec.category
            rank = CATEGORY_ORDER.index(cat) if cat in CATEGORY_ORDER else len(CATEGORY_ORDER)
            return (rank, cat)

        return sorted(self.fields.values(), key=order)

    def describe(self) -> str:
        """One line per field, for prompts and help: ``- Category.Field (kind): what it
        holds``; text is the default kind, so it is not named."""
        lines = []
        for spec in self.ordered():
            kind = KIND_LABELS.get(spec.type) or "/".join(spec.choices)
            lines.append(f"- {spec.name}{f' ({kind})' if kind else ''}: {spec.description}")
        return "\n".join(lines)


KIND_LABELS = {"string": "", "integer": "integer", "string_list": "list", "enum": ""}


def nest(values: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """``{"A.b": 1}`` -> ``{"A": {"b": 1}}`` (the paper's persona layout)."""
    out: dict[str, dict[str, Any]] = {}
    for name, value in values.items():
        cat, _, short = name.partition(".")
        out.setdefault(cat, {})[short] = value
    return out


def flatten(persona: Mapping[str, Any]) -> dict[str, Any]:
    """``{"A": {"b": 1}}`` -> ``{"A.b": 1}``; already-flat keys pass through."""
    out: dict[str, Any] = {}
    for key, value in persona.items():
        if isinstance(value, Mapping) and "." not in key:
            for short, inner in value.items():
                out[f"{key}.{short}"] = inner
        else:
            out[key] = value
    return out
