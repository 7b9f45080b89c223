"""The kit's split_message (limits, boundaries, code fences) and rate limiter."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aipersona.adapters.kit import RateLimiter, split_message


@pytest.mark.parametrize("limit", [100, 2000, 4096])
def test_chunks_respect_limit_and_keep_fences_balanced(limit: int) -> None:
    text = ("Hello world. This is a sentence! " * 50 + "\n\n") * 10
    text += "```python\n" + "x = 1\n" * 600 + "```\nend."
    chunks = split_message(text, limit)
    assert all(len(c) <= limit for c in chunks)
    assert all(c.count("```") % 2 == 0 for c in chunks)
    assert chunks[-1].endswith("end.")


def test_prefers_paragraphs_then_sentences() -> None:
    text = "A" * 50 + ".\n\n" + "B" * 50 + ". " + "C" * 50 + "."
    assert split_message(text, 60) == ["A" * 50 + ".", "B" * 50 + ".", "C" * 50 + "."]


@pytest.mark.timeout(10)
def test_code_on_fence_line_does_not_hang() -> None:
    chunks = split_message("```" + "x" * 5000, 4096)
    assert chunks and all(len(c) <= 4096 for c in chunks)
    chunks = split_message("see " + "y" * 3000 + " ```" + "z" * 3000, 2000)
    assert all(len(c) <= 2000 for c in chunks)


@settings(max_examples=200, deadline=None)
@given(
    st.text(alphabet=st.sampled_from(["a", " ", ".", "\n", "`", "x", "é", "😀"]), max_size=3000),
    st.integers(min_value=16, max_value=500),
)
def test_any_text_splits_within_limit(text: str, limit: int) -> None:
    chunks = split_message(text, limit)
    assert all(0 < len(c) <= limit for c in chunks)
    words = "".join(text.split()).replace("`", "")
    assert "".join("".join(chunks).split()).replace("`", "") == words


def test_rate_limiter_window() -> None:
    rl = RateLimiter(2, window=60)
    assert rl.hit("u", now=0) == 0 and rl.hit("u", now=1) == 0
    assert rl.hit("u", now=2) == pytest.approx(58)
    assert rl.hit("other", now=2) == 0
    assert rl.hit("u", now=60.5) == 0
