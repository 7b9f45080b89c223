"""The embedded default: the real SmolLM2-135M model through llama_cpp.server.

Asserts structure, not facts (the model is tiny). Runs in CI; skipped locally only when the
[local] extra is missing.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

from aipersona.core import Config, Identity, PersonaCore

pytestmark = [pytest.mark.local_model, pytest.mark.timeout(600)]

if importlib.util.find_spec("llama_cpp") is None and not os.environ.get("CI"):
    pytest.skip("the [local] extra is not installed", allow_module_level=True)


async def test_local_model_end_to_end(tmp_path: Path) -> None:
    cfg = Config.from_dict(
        {
            "database": {"path": str(tmp_path / "local.db")},
            "llm": {"max_tokens": 96, "local": {"n_ctx": 2048}},
            "persona": {"update_every": 1},
            "sessions": {"history_messages": 4},
        }
    )
    ident = Identity("cli", "ana")
    async with PersonaCore(cfg) as core:
        assert core.local_model is not None and core.local_model.base_url.startswith(
            "http://127.0.0.1:"
        )
        reply = await core.respond(
            ident, "c", "Hi! My name is Ana, I am a nurse in Lisbon and I love surfing."
        )
        assert reply.ok, reply.error
        assert reply.text.strip()
        await core.end_session(ident, "c")
        await core.wait_for_updates()
        data = await core.export(ident)
    assert data is not None
    assert [m["role"] for m in data["messages"]] == ["user", "assistant"]
    [update] = data["persona_updates"]
    # the grammar-constrained reply parsed as the persona_update contract
    assert (update["status"], update["attempts"]) == ("done", 1), update["error"]
    for row in data["history"]:
        assert row["source"] == "optimizer"
