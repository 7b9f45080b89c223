"""The tool simulator: answers the chatbot's calls to a scene's ``available_apis``.

It sees only what a real API would have: the API's spec, the call's arguments and the scene
context (the facts of the situation, e.g. dates and places the API's data would hold). Never
the golden persona or the scene description: its output reaches the chatbot in every
condition, ``no_persona`` included, and must not carry the persona there.
"""

from __future__ import annotations

from typing import Any

from aipersona.core import LLMClient

from .roles import dumps, marker

TOOL_SIMULATOR_PROMPT = (
    f"{marker('tool-simulator')}\n"
    "You simulate a device or web API that an AI assistant on a user's device has called. "
    "Given the API's description, the call's arguments and the facts of the situation, "
    "return the result the real API would return: realistic, concise, as JSON or short "
    "text. Invent plausible details when needed; never mention that you are a simulation."
)


def tool_messages(
    name: str, spec: dict[str, Any], arguments: dict[str, Any], scene_context: str
) -> list[dict[str, str]]:
    user = (
        f"<api>\n{dumps({'name': name, **spec})}\n</api>\n\n"
        f"<arguments>\n{dumps(arguments)}\n</arguments>\n\n"
        f"<situation>\n{scene_context}\n</situation>\n\nReturn the API result now."
    )
    return [
        {"role": "system", "content": TOOL_SIMULATOR_PROMPT},
        {"role": "user", "content": user},
    ]


async def simulate_tool(
    llm: LLMClient,
    name: str,
    spec: dict[str, Any],
    arguments: dict[str, Any],
    *,
    scene_context: str,
    max_tokens: int,
) -> str:
    completion = await llm.complete(
        tool_messages(name, spec, arguments, scene_context), max_tokens=max_tokens
    )
    return completion.content.strip()
