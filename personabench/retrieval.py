"""The ``rag`` condition's retrieval (the paper's ConvRAG baseline): the earlier turns of the
same user most similar to the current message, put into the chatbot's system prompt.

Two retrievers: **embeddings** through the endpoint's ``/v1/embeddings`` (cosine similarity,
as ConvRAG), and **word overlap** (shared tokens), the fallback for endpoints without
embeddings. ``[bench] rag_retriever = "auto"`` probes the embedder once at the start and
falls back when it answers with an HTTP error; the retriever used labels the ``rag`` row.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any

from aipersona.core import LLMError, ToolContext, hookimpl

from .clients import CountingLLM
from .metrics import tokens
from .roles import RAG_PREAMBLE, SCENE_PREAMBLE

log = logging.getLogger(__name__)

WORD_OVERLAP = "word overlap"


def turn_text(turn: dict[str, Any]) -> str:
    return f"user: {turn.get('user', '')}\nassistant: {turn.get('assistant', '')}"


def retrieve(query: str, turns: list[dict[str, Any]], top_k: int) -> list[dict[str, Any]]:
    """Word overlap: the ``top_k`` past turns with the most query tokens in common (ties: most
    recent first), in chronological order. Turns sharing no token are never returned."""
    q = tokens(query)
    scored = []
    for pos, turn in enumerate(turns):
        overlap = len(q & tokens(f"{turn.get('user', '')} {turn.get('assistant', '')}"))
        if overlap:
            scored.append((float(overlap), pos))
    return _best(scored, turns, top_k)


def _best(
    scored: list[tuple[float, int]], turns: list[dict[str, Any]], top_k: int
) -> list[dict[str, Any]]:
    best = sorted(scored, key=lambda sp: (-sp[0], -sp[1]))[:top_k]
    return [turns[pos] for _, pos in sorted(best, key=lambda sp: sp[1])]


def cosine(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=False))
    na, nb = math.sqrt(sum(x * x for x in a)), math.sqrt(sum(y * y for y in b))
    return dot / (na * nb) if na and nb else 0.0


@dataclass
class Retriever:
    """Embeddings when ``client`` is set, else word overlap. Vectors are cached by text."""

    client: CountingLLM | None = None
    label: str = WORD_OVERLAP
    cache: dict[str, list[float]] = field(default_factory=dict)

    async def top(
        self, query: str, turns: list[dict[str, Any]], top_k: int
    ) -> tuple[list[dict[str, Any]], str]:
        """(hits, the retriever used). An embedding call that fails falls back to word overlap
        for this query, and says so."""
        if self.client is None or not turns:
            return retrieve(query, turns, top_k), self.label
        texts = [turn_text(t) for t in turns]
        try:
            missing = [t for t in dict.fromkeys([query, *texts]) if t not in self.cache]
            if missing:
                for text, vector in zip(missing, await self.client.embed(missing), strict=True):
                    self.cache[text] = vector
        except LLMError as exc:
            log.warning("embedding retrieval failed, using word overlap: %s", exc)
            return retrieve(query, turns, top_k), f"{WORD_OVERLAP} (embedding call failed: {exc})"
        q = self.cache[query]
        scored = [(cosine(q, self.cache[text]), pos) for pos, text in enumerate(texts)]
        return _best(scored, turns, top_k), self.label


async def resolve_retriever(mode: str, client: CountingLLM | None) -> Retriever:
    """The retriever for ``[bench] rag_retriever``: probe the embedder once ("auto" falls back
    to word overlap on an HTTP error and says why; "embedding" refuses to run)."""
    if mode == "word_overlap" or client is None:
        return Retriever(None, WORD_OVERLAP)
    try:
        await client.embed(["probe"])
    except LLMError as exc:
        if mode == "embedding" or exc.status_code is None:
            raise LLMError(
                f"rag_retriever = '{mode}' but {client.base_url}/embeddings failed: {exc}",
                retryable=False,
            ) from None
        log.warning("no embeddings at %s (%s): rag uses word overlap", client.base_url, exc)
        return Retriever(None, f"{WORD_OVERLAP} (the endpoint has no /v1/embeddings: {exc})")
    return Retriever(client, f"embeddings ({client.settings.model})")


class SessionPrompt:
    """The chatbot's per-session prompt sections: the scene description (``chatbot_scene``)
    and the turns retrieved for the current message (``rag``)."""

    def __init__(self) -> None:
        self.scene = ""
        self.retrieved: list[dict[str, Any]] = []

    @hookimpl
    def aipersona_build_prompt(self, persona: Any, context: ToolContext) -> str | None:
        parts = []
        if self.scene:
            parts.append(f"{SCENE_PREAMBLE}\n{self.scene}")
        if self.retrieved:
            lines = [RAG_PREAMBLE]
            for hit in self.retrieved:
                lines.append(f"- user: {hit['user']}\n  assistant: {hit['assistant']}")
            parts.append("\n".join(lines))
        return "\n\n".join(parts) or None
