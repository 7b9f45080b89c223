"""The known differences between this bench and the paper (its text and its released code),
with the reason for each. The README lists them; every ``report.md`` lists them with the
values its run used."""

from __future__ import annotations

from typing import Any

from .settings import BenchSettings


def deviations(settings: BenchSettings, retriever: str | None) -> list[tuple[str, str]]:
    """(topic, what differs and why) for a run with these settings."""
    scene = {
        "paper": "as the paper's code (the default): only for scenes that have APIs",
        "always": 'for every scene ([bench] chatbot_scene = "always")',
        "never": 'never ([bench] chatbot_scene = "never")',
    }[settings.chatbot_scene]
    return [
        (
            "Update schedule",
            "The paper's code updates the persona after every k-th session and also after "
            "each of the last three sessions. Here aipersona's own learning loop, the system "
            "under test, updates it after every k-th session only (`persona.update_every = k`), "
            "as it would in a deployed bot; the extra updates at the end would raise the final "
            "persona similarity of large k.",
        ),
        (
            "Transcripts",
            "The paper's optimizer sees at most the last three sessions, each cut to its first "
            "9 messages. Here it sees every session since the last update, whole, up to "
            "`[persona] max_transcript_chars` (aipersona's optimizer, unchanged for the bench).",
        ),
        (
            "Scene description",
            f"The chatbot gets the scene description {scene}. The paper's code puts it into "
            "the chatbot's prompt together with the scene's API list, so scenes without APIs "
            "go without it. It is written from the golden persona (the user's name, their "
            "situation), so it carries some persona into every condition, as in the paper.",
        ),
        (
            "Tools",
            "The scene's APIs are real function calls (OpenAI tools), answered by a tool "
            "simulator that sees only the API's spec, the arguments and the scene context. "
            "The paper's chatbot writes API calls as text that its released parser never "
            "matches; its simulator saw the API docs and the call. The embedded model is "
            "offered no tools.",
        ),
        (
            "Retriever",
            "The paper's ConvRAG retrieves earlier turns by embeddings. "
            + (
                f"Here the rag condition used {retriever} (`[bench] rag_retriever`; word "
                "overlap is the fallback for endpoints without /v1/embeddings)."
                if retriever
                else "This run has no rag condition."
            ),
        ),
        (
            "Judge wording",
            "The paper's evaluator was not released. The response judge uses the paper's "
            "10/7/5/3/0 rubric with our wording; persona similarity is rated 0-10 by an LLM "
            "judge with our instructions (field by field and overall, by meaning, across "
            "languages). The lexical overlap column is ours and is not in the paper.",
        ),
        (
            "User simulator wording",
            "Two steps as in the paper's code (a satisfaction check that may see the expected "
            "response, a follow-up writer that does not), with English instructions adapted "
            f"from its Chinese ones; the user writes in `[bench] lang` = {settings.lang!r}.",
        ),
        (
            "Persona in the chatbot's prompt",
            "The paper describes the persona in the chatbot's prompt, but its released code "
            "never passes it. Here it is always in the prompt (aipersona's design).",
        ),
    ]


def as_json(settings: BenchSettings, retriever: str | None) -> list[dict[str, Any]]:
    return [{"topic": t, "text": x} for t, x in deviations(settings, retriever)]
