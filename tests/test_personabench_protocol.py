"""PersonaBench against the paper's Table 1 (issue 13): one test walks every point with the
scripted multi-role fake (``tests/fakes/bench_script.py``) on a small synthetic dataset whose
golden personas carry text that appears nowhere else, so a leak is visible."""

from __future__ import annotations

import asyncio
import copy
import importlib.util
import json
import math
import os
import re
import signal
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from aipersona.core import Config, LLMError, build_system_prompt
from aipersona.core import Persona as CorePersona
from aipersona.personabench.clients import ModelPool
from aipersona.personabench.data import append_jsonl, read_jsonl
from aipersona.personabench.evaluate import RunOptions, run_bench, shows_scene
from aipersona.personabench.generate import GenerateError, GenerateOptions, generate
from aipersona.personabench.manifest import ResumeError
from aipersona.personabench.plot import figure
from aipersona.personabench.settings import load_bench
from tests.fakes.bench_script import BenchScript
from tests.fakes.openai_server import FakeOpenAI, Json
from tests.test_personabench import bench_config

ROOT = Path(__file__).resolve().parents[1]
CHATBOT = "[personabench:chatbot]"
API = {"searchWeb": {"arguments": ["query"], "description": "Search the web."}}
QUERIES = ("find tea prices in hangzhou", "plan my meeting schedule", "tea calendar tomorrow")
GOLDEN_ONLY = ("GOLDEN-ONLY-紫砂壶收藏", "GOLDEN-ONLY-夜跑")  # in a golden persona, nowhere else


def persona(pid: str, name: str, gender: str, secret: str) -> dict[str, Any]:
    scenes = []
    for i, query in enumerate(QUERIES):
        scenes.append(
            {
                "scene_type": f"场景{i + 1}: errands",
                "scene_desc": f"SCENE-DESC-{pid}-{i + 1}: the user needs help with an errand.",
                "scene_context": f"CONTEXT-{pid}-{i + 1}: it is due on Friday.",
                "expected_response": f"REFERENCE-ONLY-{pid}-{i + 1}: a short, data-backed plan.",
                "personalized_query": f"As a tea lover: {query}",
                "neutralized_query": query,
                "available_apis": API if i else {},  # the first scene has no APIs
            }
        )
    return {
        "id": pid,
        "name": name,
        "persona": {
            "Demographics": {
                "Name": name,
                "Age": 34,
                "Gender": gender,
                "Nationality": "中国",
                "Language": ["中文", "英文"],
                "Career_Information": f"杭州一家茶馆的老板{pid}",
            },
            "Personality": {
                "Extraversion_or_Introversion": "I",
                "Sensing_or_Intuition": "N",
                "Thinking_or_Feeling": "F",
                "Judging_or_Perceiving": "J",
                "Values_and_Interests": ["品茶", secret],
            },
            "Pattern": {"Usage_Pattern": "每天早上用助手查资料"},
            "Preference": {"Preferred_Styles": "简短、有数据支持的回答"},
        },
        "scenes": scenes,
    }


def write_data(path: Path) -> Path:
    append_jsonl(
        path,
        [
            persona("pa", "林小雨", "女性", GOLDEN_ONLY[0]),
            persona("pb", "王大山", "男性", GOLDEN_ONLY[1]),
        ],
    )
    return path


def config(base_url: str, tmp_path: Path, **bench: Any) -> Config:
    return bench_config(base_url, tmp_path, **{"rag_top_k": 1, **bench})


def role_of(req: dict[str, Any]) -> str:
    system = req["messages"][0]["content"] if req.get("messages") else ""
    head = system.split("\n", 1)[0]
    return head.removeprefix("[personabench:").split("]", 1)[0] if "[personabench:" in head else ""


def requests_of(fake: FakeOpenAI, role: str, since: int = 0) -> list[dict[str, Any]]:
    return [r for r in fake.requests[since:] if role_of(r) == role]


def text_of(req: dict[str, Any]) -> str:
    return json.dumps(req["messages"], ensure_ascii=False)


def usage_total(rows: dict[str, dict[str, Any]]) -> int:
    return sum(r.get("prompt_tokens", 0) + r.get("completion_tokens", 0) for r in rows.values())


@pytest.fixture
async def fake() -> Any:
    async with FakeOpenAI() as server:
        yield server


def use(fake: FakeOpenAI, script: BenchScript) -> BenchScript:
    fake.chat_default = script
    fake.json_default = script
    return script


@pytest.mark.timeout(300)
async def test_every_point_of_issue_13(fake: FakeOpenAI, tmp_path: Path) -> None:
    data = write_data(tmp_path / "data.jsonl")
    await check_comparability_and_plot(fake, tmp_path, data)  # points 1-5, 10, 13
    await check_no_leaks(fake, tmp_path, data)  # points 6, 7
    await check_resume(fake, tmp_path, data)  # points 8, 10
    await check_failed_final_update(fake, tmp_path, data)  # point 9
    await check_generate_fails_loudly(fake, tmp_path)  # point 11
    await check_sigterm_stops_the_embedded_model(fake, tmp_path, data)  # points 10, 12
    check_readme(tmp_path)  # points 5, 14


# -- points 1-5, 10 and 13 -------------------------------------------------------------------


async def check_comparability_and_plot(fake: FakeOpenAI, tmp_path: Path, data: Path) -> None:
    script = use(
        fake,
        BenchScript(learned={"Demographics.Nationality": "China", "Demographics.Gender": "女"}),
    )
    script.judge_garbage = 1  # one first response goes unjudged (point 10: n)
    # "calendar"/"meeting" texts share a direction no word of theirs shares (point 4)
    fake.embed = lambda text: [1.0, 0.0] if re.search(r"calendar|meeting", text) else [0.0, 1.0]
    out = tmp_path / "table1"
    results = await run_bench(config(fake.base_url, tmp_path), RunOptions(str(data), str(out)))
    items = results["items"]
    by = {(i["condition"], i["persona_id"], i["scene_index"]): i for i in items}
    report = (out / "report.md").read_text(encoding="utf-8")
    summary = results["summary"]

    # 1. persona similarity: an LLM judge on 0-10, by meaning and across languages
    final = by[("learned_k1", "pa", 2)]
    assert final["persona"]["Demographics"] == {"Nationality": "China", "Gender": "女"}
    assert final["similarity_fields"]["Demographics.Nationality"] == 10  # China = 中国
    assert final["similarity_fields"]["Demographics.Gender"] == 10  # 女 = 女性
    assert final["similarity"] == pytest.approx(10 * 2 / len(final["similarity_fields"]), 0.01)
    assert final["lexical_fields"]["Demographics.Nationality"] == 0.0  # wording misses it
    assert final["lexical_fields"]["Demographics.Gender"] < 1.0
    # pb is male: the learned 女 is wrong for it, so the two personas differ (a spread)
    assert by[("learned_k1", "pb", 2)]["similarity_fields"]["Demographics.Gender"] == 0
    sim_reqs = requests_of(fake, "similarity-judge")
    assert any("中国" in text_of(r) and "China" in text_of(r) for r in sim_reqs)
    assert "different languages" in sim_reqs[0]["messages"][0]["content"]
    assert summary["golden_persona"]["persona_similarity"] == 10.0
    assert summary["learned_k1"]["persona_similarity"] == pytest.approx(
        (by[("learned_k1", "pa", 2)]["similarity"] + by[("learned_k1", "pb", 2)]["similarity"]) / 2
    )
    assert "Persona similarity, LLM judge (0–10)" in report
    assert "Lexical overlap (0–1)" in report
    header = next(line for line in report.splitlines() if line.startswith("| Condition"))
    for cell in header.strip("|").split("|")[1:-1]:  # every metric column states its scale
        assert re.search(r"\(\d–\d+\)", cell), cell
    # the empty persona scores 0 without a call; the unchanged golden one is judged once
    assert by[("no_persona", "pa", 2)]["similarity_method"] == "empty"
    assert results["usage"]["similarity_judge"]["calls"] == len(sim_reqs) == 2 + 2 + 2

    # 2. utterances: the paper's rule (user messages, at most max_turns)
    never = [i for i in items if i["condition"] == "no_persona"]
    assert {i["user_turns"] for i in never} == {3} and {i["utterances"] for i in never} == {3}
    assert summary["no_persona"]["utterances"] == 3.0
    assert summary["golden_persona"]["utterances"] == 1.0
    assert "Utterances (1–3) ↓" in report and "at most `max_turns` = 3" in report

    # 3. the scene description reaches the chatbot as the paper's code does: with the APIs
    chat = requests_of(fake, "chatbot")
    for pid in ("pa", "pb"):
        assert any(f"SCENE-DESC-{pid}-2" in r["messages"][0]["content"] for r in chat)
        assert not any(f"SCENE-DESC-{pid}-1" in text_of(r) for r in chat)  # no APIs there
        assert by[("no_persona", pid, 1)]["scene_shown"]
        assert not by[("no_persona", pid, 0)]["scene_shown"]
    scene = load_first_scene(data)
    assert not shows_scene("paper", scene) and shows_scene("always", scene)
    assert not shows_scene("never", scene)

    # 4. rag retrieves by embeddings (the nearest vector, not the most shared words)
    assert results["labels"]["rag"] == "rag (retriever: embeddings (text-embedding-3-small))"
    assert "| rag (retriever: embeddings (text-embedding-3-small)) |" in report
    assert {r["model"] for r in fake.embedding_requests} == {"text-embedding-3-small"}
    third = [r for r in chat if QUERIES[2] in r["messages"][-1].get("content", "")]
    rag_prompts = [
        r["messages"][0]["content"] for r in third if "Earlier conversation" in text_of(r)
    ]
    assert rag_prompts and all(QUERIES[1] in p and QUERIES[0] not in p for p in rag_prompts)

    # 5. the deviations, in the report
    for topic in DEVIATION_TOPICS:
        assert f"- **{topic}.**" in report
    assert "embeddings (text-embedding-3-small)" in report.split("## Deviations")[1]

    # 10. accounting: models used, no seed, n = judged items, only real tools in the prompt
    assert results["models"]["chatbot"]["model"] == "chat-model"
    assert "chatbot = `chat-model`" in report
    assert "seed" not in results["config"]["bench"] and "seeds" not in results
    unjudged = [i for i in items if i["helpfulness"] is None]
    assert len(unjudged) == 1 and "judge: judge gave no usable score" in unjudged[0]["errors"]
    assert sum(row["n"] for row in summary.values()) == len(items) - 1
    assert summary[unjudged[0]["condition"]]["n"] == 2 * 3 - 1
    for req in chat:
        offered = {t["function"]["name"] for t in req.get("tools") or []}
        system = req["messages"][0]["content"]
        assert "update_persona_field" not in system
        if "## Tools" in system:
            listed = set(re.findall(r"^- (\w+):", system.split("## Tools")[1], re.M))
            assert listed == offered, (listed, offered)
    assert "update_persona_field" not in build_system_prompt("x", CorePersona(1), [], "- a: b")

    # 13. the plot: markers, offsets, integer ticks, scales, n, bands and gaps
    check_plot(results)

    # 4. (fallback) without /v1/embeddings rag falls back to word overlap and says so
    fake.embeddings_status = 404
    out2 = tmp_path / "rag-fallback"
    before = len(fake.requests)
    fallback = await run_bench(
        config(fake.base_url, tmp_path),
        RunOptions(str(data), str(out2), personas=1, conditions=["rag"]),
    )
    assert fallback["labels"]["rag"].startswith("rag (retriever: word overlap (the endpoint has")
    assert "HTTP 404" in fallback["labels"]["rag"]
    third = [
        r["messages"][0]["content"]
        for r in requests_of(fake, "chatbot", before)
        if QUERIES[2] in r["messages"][-1].get("content", "")
    ]
    assert third and all(QUERIES[0] in p and QUERIES[1] not in p for p in third)
    with pytest.raises(LLMError, match="rag_retriever = 'embedding'"):
        await run_bench(
            config(fake.base_url, tmp_path, rag_retriever="embedding"),
            RunOptions(str(data), str(tmp_path / "rag-strict"), personas=1, conditions=["rag"]),
        )
    fake.embeddings_status = None


DEVIATION_TOPICS = (
    "Update schedule",
    "Transcripts",
    "Scene description",
    "Tools",
    "Retriever",
    "Judge wording",
    "User simulator wording",
    "Persona in the chatbot's prompt",
)


def load_first_scene(data: Path) -> Any:
    from aipersona.personabench.data import load_personas

    return load_personas(data, limit=1)[0].scenes[0]


def check_plot(results: dict[str, Any]) -> None:
    import matplotlib.pyplot as plt
    from matplotlib.collections import PolyCollection

    fig = figure(results)
    try:
        axes = fig.axes
        labels = [ax.get_ylabel() for ax in axes]
        assert labels == [
            "user messages (1–3)",
            "judge score (0–20)",
            "similarity (0–10)",
            "overlap (0–1)",
        ]
        for ax in axes:
            lines = ax.get_lines()
            assert len(lines) == len(results["series"])
            assert all(line.get_marker() not in (None, "", "None") for line in lines)
            assert len({line.get_marker() for line in lines}) == len(lines)
            firsts = [float(line.get_xdata()[0]) for line in lines]
            assert len(set(firsts)) == len(firsts) and all(abs(x - 1) < 0.3 for x in firsts)
            ticks = [t for t in ax.get_xticks() if 0.5 <= t <= 3.5]
            assert ticks == [1.0, 2.0, 3.0]
            if ax is axes[1]:  # one first response went unjudged: its n is printed there
                assert ax.get_title().endswith(" — n = 2 per point, others marked")
                assert [t.get_text() for t in ax.texts] == ["n=1"]
            else:  # two personas behind every point
                assert ax.get_title().endswith(" — n = 2 per point") and not ax.texts
            assert any(isinstance(c, PolyCollection) for c in ax.collections)
        # the band of learned_k1's similarity has height: its two personas differ
        sim = results["series"]["learned_k1"]["similarity"]
        assert sim[-1]["sd"] and sim[-1]["sd"] > 0
    finally:
        plt.close(fig)
    # a missing value leaves a gap
    broken = copy.deepcopy(results)
    broken["series"]["no_persona"]["similarity"][1] = {"mean": None, "sd": None, "n": 0}
    fig = figure(broken)
    try:
        panel = fig.axes[2]
        ys = panel.get_lines()[list(broken["series"]).index("no_persona")].get_ydata()
        assert math.isnan(float(ys[1])) and not math.isnan(float(ys[0]))
        assert panel.get_title().endswith(" — n = 2 per point")  # the gap has no n
    finally:
        plt.close(fig)


# -- points 6 and 7 ---------------------------------------------------------------------------


async def check_no_leaks(fake: FakeOpenAI, tmp_path: Path, data: Path) -> None:
    """No text unique to a golden persona, and no expected response, reaches the chatbot of
    a non-golden condition by any route: its prompt, the retrieved turns, the tool results
    (the scripted tool simulator echoes everything it is shown), the follow-up messages.
    The one designed channel, the simulated user's own words, is scripted here as a user who
    does not recite their persona."""
    use(fake, BenchScript(learned={"Demographics.Nationality": "China"}))
    before = len(fake.requests)
    await run_bench(
        config(fake.base_url, tmp_path, chatbot_scene="always"),
        RunOptions(
            str(data), str(tmp_path / "leaks"), conditions=["no_persona", "rag", "learned"], k=[1]
        ),
    )
    new = fake.requests[before:]
    lines = list(read_jsonl(data))
    goldens = [line["persona"] for line in lines]
    scenes = [s for line in lines for s in line["scenes"]]
    seen_by_chatbot = json.dumps(
        [[s["scene_desc"], s["scene_context"], s["neutralized_query"], API] for s in scenes],
        ensure_ascii=False,
    )
    unique = [
        value
        for g in goldens
        for value in _strings(g)
        if len(value) >= 2 and value not in seen_by_chatbot and value not in ("China",)
    ]
    assert set(GOLDEN_ONLY) <= set(unique) and "杭州一家茶馆的老板pa" in unique
    references = [s["expected_response"] for s in scenes]
    chat = [r for r in new if role_of(r) == "chatbot"]
    tools = [r for r in new if role_of(r) == "tool-simulator"]
    follow = [r for r in new if role_of(r) == "follow-up"]
    check = [r for r in new if role_of(r) == "satisfaction"]
    assert chat and tools and follow and check
    assert any("a fixed tool result" in text_of(r) for r in chat)  # tool results got there
    for req in chat:
        text = text_of(req)
        assert not [u for u in unique if u in text], [u for u in unique if u in text]
        assert not any(ref in text for ref in references)
    for req in tools:  # 7: the API spec, the arguments and the scene context only
        text = text_of(req)
        assert "CONTEXT-" in text and "searchWeb" in text
        assert not [u for u in unique if u in text] and "SCENE-DESC" not in text
        assert not any(ref in text for ref in references)
    for req in follow:  # 6: the follow-up writer never sees the expected response
        assert not any(ref in text_of(req) for ref in references)
        assert "REFERENCE-ONLY" not in text_of(req)
    assert all("REFERENCE-ONLY" in text_of(r) for r in check)  # the check may see it


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return []


# -- points 8 and 10 --------------------------------------------------------------------------


async def check_resume(fake: FakeOpenAI, tmp_path: Path, data: Path) -> None:
    script = use(fake, BenchScript())
    out = tmp_path / "resume"
    cfg = config(fake.base_url, tmp_path)
    opts = RunOptions(str(data), str(out), personas=1, conditions=["learned"], k=[1])
    hung = asyncio.Event()

    def hung_request(req: dict[str, Any]) -> bool:
        # the second session's first satisfaction check: the chatbot has answered already
        return role_of(req) == "satisfaction" and "SCENE-DESC-pa-2" in text_of(req)

    def hang(role: str, req: dict[str, Any]) -> bool:
        if hung_request(req) and not hung.is_set():
            hung.set()
            return True
        return False

    script.hang = hang
    before = len(fake.requests)
    task = asyncio.create_task(run_bench(cfg, opts))
    await asyncio.wait_for(hung.wait(), 30)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    answered_before = [r for r in fake.requests[before:] if not hung_request(r)]
    assert [i["scene_index"] for i in read_jsonl(out / "items.jsonl")] == [0]
    (discarded,) = read_jsonl(out / "discarded.jsonl")
    assert discarded["scene_index"] == 1 and discarded["reason"] == "interrupted"
    assert discarded["tokens"]["chatbot"]["calls"] >= 1
    assert list(read_jsonl(out / "runs.jsonl"))[-1]["status"] == "interrupted"
    counted = sum(r["prompt_tokens"] for r in read_jsonl(out / "usage.jsonl"))
    assert counted == sum(_prompt_tokens(r) for r in answered_before)  # nothing uncounted

    # the interrupted session reruns from its start: the query once, no earlier answer
    script.hang = lambda role, req: False
    mark = len(fake.requests)
    results = await run_bench(cfg, opts)
    rerun = [r for r in requests_of(fake, "chatbot", mark) if QUERIES[1] in text_of(r)]
    first = rerun[0]["messages"]
    assert [m["role"] for m in first] == ["system", "user"] and first[1]["content"] == QUERIES[1]
    for req in requests_of(fake, "chatbot", before):  # never the query twice in a prompt
        assert text_of(req).count(QUERIES[1]) <= 1
    items = results["items"]
    assert [i["scene_index"] for i in items] == [0, 1, 2]
    assert items[1]["dialogue"][0] == {"role": "user", "content": QUERIES[1]}
    assert results["discarded"]["sessions"] == 1
    # every token is counted once: the kept sessions' plus the discarded attempt's
    kept = sum(usage_total(i["tokens"]) for i in items)
    assert usage_total(results["usage"]) == kept + results["discarded"]["tokens"]
    assert "1 session(s) were interrupted" in (out / "report.md").read_text(encoding="utf-8")

    # resuming with other settings, or other data, is refused with the difference named
    changed = config(fake.base_url, tmp_path, max_turns=2, judge={"model": "other-judge"})
    with pytest.raises(ResumeError) as err:
        await run_bench(changed, opts)
    assert "bench.max_turns was 3, now 2" in str(err.value)
    assert 'judge.model was "judge-model", now "other-judge"' in str(err.value)
    edited = tmp_path / "edited.jsonl"
    first_persona = next(read_jsonl(data))
    first_persona["scenes"][0]["expected_response"] += " (edited)"
    append_jsonl(edited, [first_persona])
    with pytest.raises(ResumeError, match="scene 1 of pa changed in the data"):
        await run_bench(
            cfg, RunOptions(str(edited), str(out), personas=1, conditions=["learned"], k=[1])
        )
    # more scenes, prices or concurrency may change: the run goes on
    cheaper = config(fake.base_url, tmp_path, concurrency=1, judge={"model": "judge-model"})
    again = await run_bench(cheaper, opts)
    assert len(again["items"]) == 3


def _prompt_tokens(req: dict[str, Any]) -> int:
    """What the fake reports as prompt tokens for a request it answered."""
    return sum(len(str(m.get("content") or "")) for m in req.get("messages", [])) // 4


# -- point 9 -----------------------------------------------------------------------------------


async def check_failed_final_update(fake: FakeOpenAI, tmp_path: Path, data: Path) -> None:
    opts = {"personas": 1, "scenes": 2, "conditions": ["learned"], "k": [1]}
    # fails once after the final session, then the retry within the run succeeds
    script = use(fake, BenchScript())
    script.optimizer_plan = ["ok", "fail", "ok"]
    results = await run_bench(
        config(fake.base_url, tmp_path), RunOptions(str(data), str(tmp_path / "u1"), **opts)
    )
    last = results["items"][-1]["persona_update"]
    assert last == {**last, "status": "done", "attempts": 2, "failed": False}
    assert results["summary"]["learned_k1"]["failed_updates"] == 0
    # fails on every attempt (1 + update_retries): marked on the item, counted in the report
    script = use(fake, BenchScript())
    script.optimizer_plan = ["ok", "fail", "fail", "fail"]
    out = tmp_path / "u2"
    results = await run_bench(
        config(fake.base_url, tmp_path), RunOptions(str(data), str(out), **opts)
    )
    last = results["items"][-1]["persona_update"]
    assert last["status"] == "failed" and last["failed"] and last["attempts"] == 3
    assert "HTTP 500" in last["error"]
    assert results["summary"]["learned_k1"]["failed_updates"] == 1
    report = (out / "report.md").read_text(encoding="utf-8")
    assert "learned_k1: 2 update(s) scheduled, 1 failed after retries" in report
    assert "measured without them: pa after session 2" in report


# -- point 11 ----------------------------------------------------------------------------------


class JunkGenerator(BenchScript):
    """A generator that cannot follow the persona prompt (like the embedded 135M model)."""

    def _generator__persona(self, req: dict[str, Any]) -> Any:
        return Json({"note": "I am a helpful assistant."})


async def check_generate_fails_loudly(fake: FakeOpenAI, tmp_path: Path) -> None:
    from aipersona.core.cli import main

    use(fake, JunkGenerator())
    toml = tmp_path / "gen.toml"
    toml.write_text(
        f'[llm]\nbase_url = "{fake.base_url}"\nmodel = "m"\nmax_retries = 0\n'
        '[bench]\nlang = "en"\n[bench.generate]\nmax_attempts = 2\n',
        encoding="utf-8",
    )
    seeds = tmp_path / "seeds.json"
    seeds.write_text(json.dumps([persona("s", "Seed", "female", "x")["persona"]]), "utf-8")
    args = ["bench", "generate", "-c", str(toml), "--out", str(tmp_path / "gen"),
            "--n-personas", "1", "--seeds", str(seeds), "--shared", str(tmp_path)]  # fmt: skip
    code, err = await _cli(main, args)
    assert code == 2
    assert "stage 2 (personas) made no persona in 2 attempt(s)" in err
    assert "Demographics.Name: missing" in err
    runs = list(read_jsonl(tmp_path / "gen" / "generate_runs.jsonl"))
    assert runs[-1]["status"].startswith("failed") and runs[-1]["usage"]
    # a prompt over the configured window is refused before it is sent, with the numbers
    use(fake, BenchScript())
    with toml.open("a", encoding="utf-8") as fh:
        fh.write("[bench.generator]\ncontext_window = 600\n")
    sent = len(fake.requests)
    code, err = await _cli(main, [*args[:5], str(tmp_path / "gen2"), *args[6:]])
    assert code == 2 and len(fake.requests) == sent
    assert re.search(r"stage 2 \(personas\): the generator prompt needs about \d+ tokens", err)
    assert "over the context window of 600 ([bench.generator] context_window)" in err
    assert "examples_per_prompt" in err
    with pytest.raises(GenerateError, match="stage 2"):
        await generate(
            Config.load(toml),
            GenerateOptions(
                out=str(tmp_path / "gen3"), n_personas=1, seeds=str(seeds), shared=str(tmp_path)
            ),
        )


async def _cli(main: Any, args: list[str]) -> tuple[int, str]:
    import contextlib
    import io

    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = await asyncio.to_thread(main, args)
    return code, err.getvalue()


# -- points 10 and 12 --------------------------------------------------------------------------


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _children(pid: int) -> list[tuple[int, str]]:
    out = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            ppid = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
            cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (OSError, IndexError, ValueError):
            continue
        if ppid == pid:
            out.append((int(proc.name), cmd))
    return out


async def check_sigterm_stops_the_embedded_model(
    fake: FakeOpenAI, tmp_path: Path, data: Path
) -> None:
    # the embedded model is named, never the [llm] default it replaces (point 10)
    cfg = Config.from_dict({"bench": {"judge": {"base_url": fake.base_url}}})
    pool = ModelPool(load_bench(cfg)[1])
    assert pool.describe("chatbot")["model"] == "smollm2-135m-instruct"
    assert pool.describe("judge")["model"] == "gpt-4o-mini"
    if importlib.util.find_spec("llama_cpp") is None and not os.environ.get("CI"):
        return  # the [local] extra is not installed here (CI has it)
    use(fake, BenchScript())
    toml = tmp_path / "embedded.toml"
    toml.write_text(
        f'[llm]\nbase_url = "{fake.base_url}"\nmodel = "m"\nmax_retries = 0\n'
        "[llm.local]\nn_ctx = 2048\n"
        '[bench.chatbot]\nbase_url = ""\n',  # the chatbot is the embedded model
        encoding="utf-8",
    )
    out = tmp_path / "sigterm"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "aipersona.core.cli", "bench", "run", "-c", str(toml),
        "--data", str(data), "--out", str(out), "--personas", "1", "--conditions", "no_persona",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    server: tuple[int, str] | None = None
    deadline = time.monotonic() + 120
    while server is None and time.monotonic() < deadline and proc.returncode is None:
        server = next((c for c in _children(proc.pid) if "llama_cpp.server" in c[1]), None)
        await asyncio.sleep(0.2)
    assert server is not None, "the embedded model server never started"
    port = re.search(r"--port (\d+)", server[1])
    assert port
    await _wait_for_http(f"http://127.0.0.1:{port.group(1)}/v1/models", deadline)
    proc.send_signal(signal.SIGTERM)
    _, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 143, err.decode(errors="replace")[-2000:]
    assert not _alive(server[0]), "the embedded model server outlived the run"
    run = list(read_jsonl(out / "runs.jsonl"))[-1]
    assert run["status"] == "interrupted"
    assert run["models"]["chatbot"]["model"] == "smollm2-135m-instruct"


async def _wait_for_http(url: str, deadline: float) -> None:
    import aiohttp

    async with aiohttp.ClientSession() as http:
        while time.monotonic() < deadline:
            try:
                async with http.get(url) as resp:
                    if resp.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.25)
    raise AssertionError(f"{url} never answered")


# -- points 5 and 14 ---------------------------------------------------------------------------


def check_readme(tmp_path: Path) -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("### Deviations from the paper", 1)[1].split("\n## ", 1)[0]
    for topic in DEVIATION_TOPICS:
        assert f"**{topic}.**" in section, topic
    smoke = readme.split("**Smoke run**", 1)[1].split("```sh", 1)[1].split("```", 1)[0]
    assert "--personas 2 --scenes 3" in smoke
    assert "--conditions no_persona golden_persona learned --k 1" in smoke
    assert "bench run" in smoke


# -- the parts on their own --------------------------------------------------------------------


def test_job_state_keeps_the_database_in_step(tmp_path: Path) -> None:
    from aipersona.personabench.state import JobState

    state = JobState(tmp_path, "learned_k1", "p/1")
    assert state.prepare(0) == (0, "fresh")

    def session(index: int, text: str, *, finish: bool = True) -> None:
        state.before_session(index)
        state.db.write_text(state.db.read_text() + text if state.db.exists() else text)
        if finish:
            state.after_session(index)

    session(0, "s1 ")
    session(1, "s2 ")
    session(2, "half of s3", finish=False)  # interrupted mid-session
    # two items were written: the half-written session is rolled back to its snapshot
    assert state.prepare(2) == (2, "restored") and state.db.read_text() == "s1 s2 "
    session(2, "s3 ")
    # the core closed but the item of session 3 was lost: that session reruns
    assert state.prepare(2) == (2, "restored") and state.db.read_text() == "s1 s2 "
    session(2, "s3 ")
    assert state.prepare(3) == (3, "kept") and state.db.read_text() == "s1 s2 s3 "
    # two items lost: the database cannot be taken back that far, the job reruns from scratch
    assert state.prepare(1) == (0, "rebuilt") and not state.db.exists()
    # results without any state (copied elsewhere, state deleted): from scratch as well
    other = JobState(tmp_path, "rag", "p2")
    assert other.prepare(2) == (0, "rebuilt")


async def test_window_errors_are_named(fake: FakeOpenAI) -> None:
    from aipersona.core import LLMSettings
    from aipersona.personabench.clients import CountingLLM, WindowError, estimate_tokens
    from tests.fakes.openai_server import Error

    assert estimate_tokens("中文字") == 3 + 0 + 1 and estimate_tokens("abcd" * 10) == 11
    settings = LLMSettings(base_url=fake.base_url, max_retries=0, max_tokens=50)
    llm = CountingLLM(settings, role="judge", window=100, window_source="[bench.judge] x")
    try:
        with pytest.raises(WindowError, match=r"needs about \d+ tokens \+ max_tokens 50"):
            await llm.complete([{"role": "user", "content": "word " * 100}])
        assert fake.requests == []  # refused before it was sent
        # an endpoint that says so itself: its words, as a window error
        llm.window = 0
        body = {"error": {"message": "This model's maximum context length is 8192 tokens"}}
        fake.push("chat", Error(400, body))
        with pytest.raises(WindowError, match="maximum context length is 8192"):
            await llm.complete([{"role": "user", "content": "hi"}])
    finally:
        await llm.close()


def test_a_changed_setting_is_named() -> None:
    from aipersona.personabench.manifest import data_differences, differences

    old = {"bench.max_turns": 3, "judge.model": "a", "bench.lang": "zh"}
    new = {"bench.max_turns": 2, "judge.model": "a", "chatbot.tools": True}
    assert differences(old, new) == [
        'bench.lang was "zh", now not set',
        "bench.max_turns was 3, now 2",
        "chatbot.tools was not recorded, now true",
    ]
    assert data_differences(
        {"p": {"persona": "x", "scenes": ["a", "b"]}},
        {"p": {"persona": "y", "scenes": ["a", "c", "d"]}},
    ) == ["the golden persona of p changed in the data", "scene 2 of p changed in the data"]
