"""A scripted multi-role answerer for FakeOpenAI, routing by the ``[personabench:ROLE]`` marker
in each request's system prompt (and the core optimizer by its own instructions).

Deterministic rules, so tests can compute the expected metrics by hand:

- chatbot: if tools are offered and none was called yet in this turn, call the first tool;
  otherwise answer "PERSONAL answer" when the system prompt carries a persona, else "generic
  answer" (plus " [rag]" when retrieved turns are in the prompt);
- satisfaction check: satisfied when the last assistant message contains "PERSONAL";
- follow-up writer: "please be more specific";
- judge: helpfulness 7; personalization 10 for a "PERSONAL" answer, else 3 (``judge_garbage``
  answers without scores that many times first);
- similarity judge: per golden field 10 when the learned value means the same (equal, or
  listed together in ``SYNONYMS``, across languages), else 0; overall = their mean;
- tool simulator: a fixed result that ECHOES everything the simulator was shown, so whatever
  reaches it reaches the chatbot too (the leak tests rely on this);
- optimizer: sets ``learned`` (default Demographics.Nationality); ``optimizer_plan`` lists
  "ok"/"fail" outcomes consumed call by call (a failure is HTTP 500);
- ``hang(role, request)``: when it returns True the request hangs (to interrupt a run);
- generator/simulator generation tasks: numbered personas (the first repeats a seed's name to
  exercise the dedupe), scenes, queries; the filter drops scenes whose type starts with
  "Specific".
"""

from __future__ import annotations

import itertools
import json
from collections import Counter
from collections.abc import Callable
from typing import Any

from tests.fakes.openai_server import Error, Hang, Json, Tools, last_user_text, system_text

EMPTY_PERSONA_MARK = "Nothing is known about this user yet."
RAG_MARK = "Earlier conversation turns with this user"
SYNONYMS = ({"中国", "china", "chinese"}, {"女", "女性", "female"}, {"男", "男性", "male"})


def same_meaning(a: Any, b: Any) -> bool:
    x, y = str(a).strip().lower(), str(b).strip().lower()
    return x == y or any(x in group and y in group for group in SYNONYMS)


def tagged_json(text: str, tag: str) -> Any:
    return json.loads(text.split(f"<{tag}>", 1)[1].split(f"</{tag}>", 1)[0])


class BenchScript:
    def __init__(
        self,
        *,
        learned_nationality: str = "中国",
        learned: dict[str, Any] | None = None,
        duplicate_seed_name: str = "",
    ) -> None:
        self.learned = learned or {"Demographics.Nationality": learned_nationality}
        self.duplicate_seed_name = duplicate_seed_name
        self.optimizer_plan: list[str] = []
        self.judge_garbage = 0
        self.hang: Callable[[str, dict[str, Any]], bool] = lambda role, req: False
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
        if self.hang(role, req):
            return Hang(120)
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

    def _satisfaction(self, req: dict[str, Any]) -> Any:
        dialogue = [
            json.loads(line) for line in last_user_text(req).split("\n") if line.startswith("{")
        ]
        last = next((m["text"] for m in reversed(dialogue) if m["role"] == "assistant"), "")
        if "PERSONAL" in last:
            return Json({"satisfied": True, "reason": "tailored"})
        return Json({"satisfied": False, "reason": "generic"})

    def _follow_up(self, req: dict[str, Any]) -> Any:
        return Json({"message": "please be more specific"})

    def _judge(self, req: dict[str, Any]) -> Any:
        if self.judge_garbage > 0:
            self.judge_garbage -= 1
            return Json({"verdict": "fine"})
        response = last_user_text(req).split("<assistant_response>", 1)[1]
        personal = 10 if "PERSONAL" in response else 3
        return Json({"helpfulness": 7, "personalization": personal, "reason": "ok"})

    def _similarity_judge(self, req: dict[str, Any]) -> Any:
        text = last_user_text(req)
        golden = tagged_json(text, "golden_persona")
        learned = tagged_json(text, "learned_persona")
        fields = {
            name: 10 if name in learned and same_meaning(learned[name], value) else 0
            for name, value in golden.items()
        }
        overall = sum(fields.values()) / len(fields)
        return Json({"fields": fields, "overall": overall, "reason": "compared"})

    def _tool_simulator(self, req: dict[str, Any]) -> Any:
        return json.dumps({"results": ["a fixed tool result"], "seen": last_user_text(req)})

    def _optimizer(self, req: dict[str, Any]) -> Any:
        if self.optimizer_plan and self.optimizer_plan.pop(0) == "fail":
            return Error(500)
        return Json(
            {
                "updates": [
                    {"field": name, "op": "set", "value": value, "evidence": "said so"}
                    for name, value in self.learned.items()
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
