"""A scripted multi-role answerer for FakeOpenAI, routing by the ``[personabench:ROLE]`` marker
in each request's system prompt (and the core optimizer by its own instructions).

Deterministic rules, so tests can compute the expected metrics by hand:

- chatbot: if tools are offered and none was called yet in this turn, call the first tool;
  otherwise answer "PERSONAL answer" when the system prompt carries a persona, else "generic
  answer" (plus " [rag]" when retrieved turns are in the prompt);
- simulator (evaluation): satisfied when the last assistant message contains "PERSONAL",
  else asks for more;
- judge: helpfulness 7; personalization 10 for a "PERSONAL" answer, else 3;
- tool simulator: a fixed result;
- optimizer: sets Demographics.Nationality to the value in ``learned_nationality``;
- generator/simulator generation tasks: numbered personas (the first repeats a seed's name to
  exercise the dedupe), scenes, queries; the filter drops scenes whose type starts with
  "Specific".
"""

from __future__ import annotations

import itertools
import json
from collections import Counter
from typing import Any

from tests.fakes.openai_server import Json, Tools, last_user_text, system_text

EMPTY_PERSONA_MARK = "Nothing is known about this user yet."
RAG_MARK = "Earlier conversation turns with this user"


class BenchScript:
    def __init__(self, *, learned_nationality: str = "中国", duplicate_seed_name: str = "") -> None:
        self.learned_nationality = learned_nationality
        self.duplicate_seed_name = duplicate_seed_name
        self.roles: Counter[str] = Counter()
        self._persona_no = itertools.count()
        self._scene_no = itertools.count()

    def role(self, req: dict[str, Any]) -> str:
        system = system_text(req)
        if system.startswith("You keep the persona"):
            return "optimizer"
        if system.startswith("[personabench:"):
            head = system.split("\n", 1)[0]
            role = head[len("[personabench:") : head.index("]")]
            if "task=" in head:
                role += ":" + head.split("task=", 1)[1].strip()
            return role
        return "unknown"

    def __call__(self, req: dict[str, Any]) -> Any:
        role = self.role(req)
        self.roles[role] += 1
        handler = getattr(self, "_" + role.replace("-", "_").replace(":", "__"), None)
        if handler is None:
            raise AssertionError(f"unrouted request: {system_text(req)[:200]!r}")
        return handler(req)

    # -- evaluation roles ------------------------------------------------------------------------

    def _chatbot(self, req: dict[str, Any]) -> Any:
        msgs = req["messages"]
        tools = req.get("tools") or []
        called = any(m.get("role") == "tool" for m in msgs[-4:])
        if tools and not called and msgs[-1].get("role") == "user":
            name = tools[0]["function"]["name"]
            return Tools([(name, {"query": "look it up"})])
        system = system_text(req)
        text = "generic answer" if EMPTY_PERSONA_MARK in system else "PERSONAL answer"
        if RAG_MARK in system:
            text += " [rag]"
        return text

    def _simulator(self, req: dict[str, Any]) -> Any:
        dialogue = [
            json.loads(line) for line in last_user_text(req).split("\n") if line.startswith("{")
        ]
        last = next((m["text"] for m in reversed(dialogue) if m["role"] == "assistant"), "")
        if "PERSONAL" in last:
            return Json({"satisfied": True, "reason": "tailored", "reply": ""})
        return Json({"satisfied": False, "reason": "generic", "reply": "please be more specific"})

    def _judge(self, req: dict[str, Any]) -> Any:
        response = last_user_text(req).split("<assistant_response>", 1)[1]
        personal = 10 if "PERSONAL" in response else 3
        return Json({"helpfulness": 7, "personalization": personal, "reason": "ok"})

    def _tool_simulator(self, req: dict[str, Any]) -> Any:
        return '{"results": ["a fixed tool result"]}'

    def _optimizer(self, req: dict[str, Any]) -> Any:
        return Json(
            {
                "updates": [
                    {
                        "field": "Demographics.Nationality",
                        "op": "set",
                        "value": self.learned_nationality,
                        "evidence": "said so",
                    }
                ]
            }
        )

    # -- generation roles ------------------------------------------------------------------------

    def _generator__persona(self, req: dict[str, Any]) -> Any:
        n = next(self._persona_no)
        name = self.duplicate_seed_name if n == 0 and self.duplicate_seed_name else f"Person{n}"
        return Json(
            {
                "Demographics": {
                    "Name": name,
                    "Age": 30 + n,
                    "Gender": "female",
                    "Nationality": "Canada",
                    "Language": ["English"],
                    "Career_Information": f"career number {n}",
                },
                "Personality": {
                    "Extraversion_or_Introversion": "I",
                    "Sensing_or_Intuition": "N",
                    "Thinking_or_Feeling": "T",
                    "Judging_or_Perceiving": "J",
                    "Values_and_Interests": ["hiking", "chess"],
                },
                "Pattern": {"Usage_Pattern": "daily"},
                "Preference": {"Preferred_Styles": "brief", "Bogus_Field": "dropped"},
            }
        )

    def _generator__scene(self, req: dict[str, Any]) -> Any:
        n = next(self._scene_no)
        specific = "persona-specific scene" in last_user_text(req)
        kind = "Specific" if specific else "Common"
        return Json(
            {
                "scene_type": f"{kind} scene {n}: planning",
                "scene_desc": f"The user needs help with task {n}.",
                "scene_context": f"Task {n} is due on Friday in Paris.",
                "expected_response": "A concise plan that fits the user's style.",
                "available_apis": [
                    {"name": "webSearch", "arguments": ["query"], "description": "Search."}
                ],
            }
        )

    def _simulator__query(self, req: dict[str, Any]) -> Any:
        scene = last_user_text(req).split("<scene>\n", 1)[1].split("\n", 1)[0]
        return Json({"query": f"As a chess lover, help me with: {scene}"})

    def _generator__filter(self, req: dict[str, Any]) -> Any:
        text = last_user_text(req)
        scene = text.split("<scene>\n", 1)[1].split("\n", 1)[0]
        if scene.startswith("Specific"):
            return Json({"answerable": False, "reason": "too vague", "neutralized_query": ""})
        return Json(
            {
                "answerable": True,
                "reason": "clear",
                "neutralized_query": f"Help me with: {scene}",
            }
        )
