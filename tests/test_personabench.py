"""PersonaBench: generation pipeline, evaluation protocol, metrics, CLI (offline, scripted)."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
from pathlib import Path
from typing import Any

import pytest

from aipersona.core import Config
from aipersona.personabench.data import append_jsonl, load_personas, read_jsonl
from aipersona.personabench.evaluate import RunOptions, run_bench
from aipersona.personabench.generate import GenerateOptions, generate, shared_dir, validate_persona
from aipersona.personabench.metrics import (
    field_similarity,
    jaccard,
    lexical_similarity,
    parse_labeled_scores,
    parse_rubric,
    parse_score,
    soft_set_f1,
    summarize,
    win_rate,
)
from aipersona.personabench.retrieval import retrieve
from aipersona.personabench.settings import load_bench
from tests.fakes.bench_script import BenchScript
from tests.fakes.openai_server import FakeOpenAI

DATA = shared_dir()  # $AIPERSONA_PERSONABENCH_DATA, else ../shared/personabench
needs_data = pytest.mark.skipif(not DATA.is_dir(), reason="shared PersonaBench data missing")


def bench_config(base_url: str, tmp_path: Path, **bench: Any) -> Config:
    return Config.from_dict(
        {
            "database": {"path": str(tmp_path / "unused.db")},
            "llm": {
                "base_url": base_url,
                "model": "fake-model",
                "max_retries": 0,
                "timeout_seconds": 10,
            },
            "bench": {
                "concurrency": 4,
                "max_turns": 3,
                "chatbot": {"model": "chat-model"},
                "simulator": {"model": "sim-model"},
                "judge": {
                    "model": "judge-model",
                    "input_price_per_mtok": 1.0,
                    "output_price_per_mtok": 2.0,
                },
                **bench,
            },
        }
    )


@pytest.fixture
async def scripted() -> Any:
    script = BenchScript(duplicate_seed_name="James")
    async with FakeOpenAI() as fake:
        fake.chat_default = script
        fake.json_default = script
        yield fake, script


# -- settings ---------------------------------------------------------------------------------


def test_role_settings_overlay_llm_and_keep_prices_out() -> None:
    cfg = Config.from_dict(
        {
            "llm": {"base_url": "http://127.0.0.1:1/v1", "model": "base", "temperature": 0.3},
            "bench": {
                "k": [2],
                "conditions": ["golden_persona", "learned"],
                "judge": {"model": "big", "api_key_env": "JUDGE_KEY", "input_price_per_mtok": 3},
                "simulator": {"model": "sim", "output_price_per_mtok": 4},
            },
        }
    )
    settings, roles = load_bench(cfg)
    assert settings.expanded_conditions() == ["golden_persona", "learned_k2"]
    assert roles["judge"].llm.model == "big" and roles["judge"].llm.temperature == 0.3
    assert roles["judge"].llm.api_key_env == "JUDGE_KEY" and roles["judge"].price.configured
    assert roles["chatbot"].llm.model == "base" and not roles["chatbot"].price.configured
    # the tool simulator falls back to the simulator, prices included
    assert roles["tool_simulator"].llm.model == "sim"
    assert roles["tool_simulator"].price.output_price_per_mtok == 4


# -- metrics (hand-computed) --------------------------------------------------------------------


def test_persona_similarity_hand_computed() -> None:
    golden = {
        "Demographics": {"Age": 29, "Gender": "male", "Language": ["English", "French"]},
        "Personality": {"Extraversion_or_Introversion": "E"},
        "Preference": {"Preferred_Styles": "short clear answers"},
    }
    learned = {
        "Demographics": {"Age": 29, "Language": ["English"]},
        "Personality": {"Extraversion_or_Introversion": "I"},
        "Preference": {"Preferred_Styles": "clear answers please"},
    }
    score, per = lexical_similarity(learned, golden)
    # Age exact 1; Gender missing 0; Language: P = 1, R = 1/2 -> F1 2/3; E vs I 0;
    # Styles: {short, clear, answers} vs {clear, answers, please}: 2 / 4
    assert per == pytest.approx(
        {
            "Demographics.Age": 1.0,
            "Demographics.Gender": 0.0,
            "Demographics.Language": 2 / 3,
            "Personality.Extraversion_or_Introversion": 0.0,
            "Preference.Preferred_Styles": 0.5,
        }
    )
    assert score == pytest.approx((1 + 0 + 2 / 3 + 0 + 0.5) / 5)
    assert lexical_similarity(golden, golden)[0] == 1.0
    assert lexical_similarity({}, golden)[0] == 0.0
    # Chinese text compares by characters; flat and nested layouts are equivalent
    assert jaccard("数据分析师", "数据工程师") == pytest.approx(3 / 7)
    assert field_similarity("29", 29) == 1.0 and field_similarity("e", "E") == 1.0
    assert soft_set_f1(["a b"], ["a b", "c"]) == pytest.approx(2 / 3)
    assert lexical_similarity({"Demographics.Age": 29}, {"Demographics": {"Age": 29}})[0] == 1.0


def test_rubric_and_score_parsing() -> None:
    assert parse_rubric(7) == 7
    assert parse_rubric(6.8) == 7
    assert parse_rubric("Score: 4/10") == 3  # ties go to the lower level
    assert parse_rubric("9") == 10
    assert parse_rubric(12) == 10 and parse_rubric(-1) == 0
    assert parse_rubric("n/a") is None and parse_rubric(None) is None
    assert parse_rubric(True) is None
    assert parse_labeled_scores("Helpfulness: 5\nPersonalization - 8") == {
        "helpfulness": 5,
        "personalization": 7,
    }
    # the similarity judge's 0-10 scores keep their decimals and are clamped
    assert parse_score(7.25) == 7.25 and parse_score("8/10") == 8.0
    assert parse_score(11) == 10.0 and parse_score(-2) == 0.0
    assert parse_score("none") is None and parse_score(False) is None


def test_win_rate_and_summary_hand_computed() -> None:
    def item(cond: str, pid: str, idx: int, h: int | None, p: int) -> dict[str, Any]:
        return {
            "condition": cond,
            "persona_id": pid,
            "scene_index": idx,
            "helpfulness": h,
            "personalization": p,
            "utterances": 1 + idx,
            "satisfied": idx == 0,
            "similarity": float(idx),
            "lexical_similarity": idx / 10,
        }

    learned = [
        item("l", "a", 0, 5, 5),  # 10 vs 14: loss
        item("l", "a", 1, 7, 7),  # 14 vs 14: tie
        item("l", "a", 2, 10, 7),  # 17 vs 14: win (group 1-2 size 2 -> group 3-4)
        item("l", "b", 0, None, 7),  # not judged: skipped
    ]
    golden = [item("g", "a", i, 7, 7) for i in range(3)] + [item("g", "b", 0, 7, 7)]
    rates = win_rate(learned, golden, group_size=2)
    assert rates == {
        "1-2": {"win_rate": 0.25, "n": 2.0},
        "3-4": {"win_rate": 1.0, "n": 1.0},
        "all": {"win_rate": 0.5, "n": 3.0},
    }
    row = summarize(learned)
    assert row["n"] == 3 and row["sessions"] == 4  # n counts the judged items only
    assert row["helpfulness"] == pytest.approx((5 + 7 + 10) / 3)
    assert row["utterances"] == pytest.approx((1 + 2 + 3 + 1) / 4)
    # persona similarity: last session of each persona (a: 2 and 0.2, b: 0 and 0.0)
    assert row["persona_similarity"] == pytest.approx(1.0)
    assert row["lexical_similarity"] == pytest.approx(0.1)


def test_rag_retrieval_by_lexical_overlap() -> None:
    turns = [
        {"user": "book a hotel in Paris", "assistant": "done"},
        {"user": "fitness plan", "assistant": "run daily"},
        {"user": "hotel near the gym", "assistant": "found one"},
    ]
    assert retrieve("any hotel in Paris?", turns, 1) == [turns[0]]
    # both hotel turns, in chronological order; the fitness turn shares nothing
    assert retrieve("hotel", turns, 5) == [turns[0], turns[2]]
    assert retrieve("nothing shared", turns, 5) == []


def test_validate_persona_against_schema() -> None:
    from aipersona.core.schema import PersonaSchema

    clean, problems = validate_persona(
        {
            "Demographics": {"Name": "Ana", "Age": "31", "Career_Information": "nurse"},
            "Personality": {"Extraversion_or_Introversion": "X"},
            "Other": {"Thing": 1},
        },
        PersonaSchema.build(),
    )
    assert clean == {
        "Demographics.Name": "Ana",
        "Demographics.Age": 31,
        "Demographics.Career_Information": "nurse",
    }
    assert len(problems) == 2


# -- data -------------------------------------------------------------------------------------


@needs_data
def test_load_released_data() -> None:
    personas = load_personas(DATA, limit=3, scenes=2)
    assert len(personas) == 3 and all(len(p.scenes) == 2 for p in personas)
    first = personas[0]
    assert first.persona["Demographics"]["Name"] == first.name
    assert first.scenes[0].first_query and first.scenes[0].expected_response
    assert all(isinstance(s.available_apis, dict) for p in personas for s in p.scenes)


# -- generation pipeline ------------------------------------------------------------------------


@needs_data
async def test_generation_pipeline_tiny_en_and_resume(scripted: Any, tmp_path: Path) -> None:
    fake, script = scripted
    cfg = bench_config(fake.base_url, tmp_path, lang="en")
    out = tmp_path / "gen"
    opts = GenerateOptions(
        out=str(out), n_personas=2, lang="en", common_scenes=2, specific_scenes=1
    )
    summary = await generate(cfg, opts)
    # the first persona repeated a seed's name and was asked for again
    assert script.roles["generator:persona"] == 3
    assert summary["personas"] == 2 and summary["final_personas"] == 2
    personas = load_personas(out / "personabench.jsonl")
    assert [p.name for p in personas] == ["Person1", "Person2"]
    assert personas[0].persona["Demographics"]["Age"] == 31
    assert "Bogus_Field" not in personas[0].persona["Preference"]
    for p in personas:
        assert len(p.scenes) == 2  # the persona-specific scene was filtered out
        for s in p.scenes:
            assert s.scene_type.startswith("Common")
            assert s.personalized_query.startswith("As a chess lover")
            assert s.neutralized_query.startswith("Help me with")
            assert s.available_apis == {
                "webSearch": {"arguments": ["query"], "description": "Search."}
            }
    dropped = list(read_jsonl(out / "dropped.jsonl"))
    assert len(dropped) == 2 and all(d["reason"] == "too vague" for d in dropped)
    assert len(list(read_jsonl(out / "seeds.jsonl"))) > 2
    # every generator request was in English
    gen_reqs = [r for r in fake.requests if "task=" in r["messages"][0]["content"]]
    assert all("in English" in r["messages"][0]["content"] for r in gen_reqs)

    # resume: nothing left to do, no request sent
    before = len(fake.requests)
    again = await generate(cfg, opts)
    assert len(fake.requests) == before
    assert again["final_personas"] == 2

    # an interrupted stage 4 resumes where it stopped
    lines = list(read_jsonl(out / "queries.jsonl"))
    (out / "queries.jsonl").write_text(json.dumps(lines[0]) + "\n", encoding="utf-8")
    lines5 = list(read_jsonl(out / "filtered.jsonl"))
    (out / "filtered.jsonl").write_text(json.dumps(lines5[0]) + "\n", encoding="utf-8")
    await generate(cfg, opts)
    new = fake.requests[before:]
    assert len(new) == 6  # 3 queries + 3 filter checks of one persona
    assert len(load_personas(out / "personabench.jsonl")) == 2


# -- evaluation ---------------------------------------------------------------------------------


@needs_data
async def test_evaluation_all_conditions_and_resume(scripted: Any, tmp_path: Path) -> None:
    fake, script = scripted
    cfg = bench_config(fake.base_url, tmp_path, k=[1, 3])
    out = tmp_path / "run"
    # 2 released personas, their scenes 3 and 4 (the first three scenes have no APIs)
    golden = load_personas(DATA, limit=2)
    for p in golden:
        p.scenes = p.scenes[3:5]
    data = tmp_path / "subset.jsonl"
    append_jsonl(data, [p.to_json() for p in golden])
    opts = RunOptions(data=str(data), out=str(out), personas=2, scenes=2)
    results = await run_bench(cfg, opts)

    conds = ["no_persona", "golden_persona", "rag", "learned_k1", "learned_k3"]
    assert results["conditions"] == conds
    items = results["items"]
    assert len(items) == len(conds) * 2 * 2
    by = {(i["condition"], i["persona_id"], i["scene_index"]): i for i in items}
    pids = results["personas"]

    for pid in pids:
        # golden persona: personal answer, satisfied after the neutralized query
        g = by[("golden_persona", pid, 0)]
        assert (g["helpfulness"], g["personalization"], g["utterances"]) == (7, 10, 1)
        assert g["similarity"] == 10.0 and g["lexical_similarity"] == 1.0
        assert g["dialogue"][0]["content"] == golden[pids.index(pid)].scenes[0].neutralized_query
        # no persona: never satisfied within 3 turns -> 3 utterances (the paper's rule)
        n = by[("no_persona", pid, 1)]
        assert (n["personalization"], n["user_turns"], n["utterances"]) == (3, 3, 3)
        assert [m["role"] for m in n["dialogue"]] == ["user", "assistant"] * 3
        assert n["dialogue"][2]["content"] == "please be more specific"
        assert n["similarity"] == 0.0 and n["similarity_method"] == "empty"
        # learned k=1: empty in session 1, learned after it; k=3 never updates in 2 sessions
        assert by[("learned_k1", pid, 0)]["personalization"] == 3
        assert by[("learned_k1", pid, 1)]["personalization"] == 10
        assert by[("learned_k1", pid, 1)]["persona"] == {"Demographics": {"Nationality": "中国"}}
        assert by[("learned_k3", pid, 1)]["personalization"] == 3
        assert by[("learned_k3", pid, 1)]["persona"] == {}
    # the optimizer ran once per persona (k=1: after session 1 and 2)
    assert script.roles["optimizer"] == 2 * 2
    gold_fields = len([v for v in _flat(golden[0].persona).values() if v not in ("", [], None)])
    expected_sim = 1 / gold_fields  # only Nationality (中国 == 中国) matches
    assert by[("learned_k1", pids[0], 1)]["lexical_similarity"] == pytest.approx(
        expected_sim, abs=1e-6
    )
    # the scripted similarity judge scores the one recovered field 10, the others 0
    assert by[("learned_k1", pids[0], 1)]["similarity"] == pytest.approx(10 * expected_sim, 0.01)

    # scene APIs were offered as OpenAI tools and answered by the tool simulator
    with_tools = [i for i in items if i["tool_calls"]]
    assert with_tools and script.roles["tool-simulator"] == len(
        [c for i in items for c in i["tool_calls"]]
    )
    assert all(c["error"] is None for i in with_tools for c in i["tool_calls"])
    # persona tools are not offered; scene tools are removed after their session
    for req in fake.requests:
        names = {t["function"]["name"] for t in req.get("tools") or []}
        assert "persona" not in names
    # rag put earlier turns of the same user into the prompt of the second session
    assert any(i["first_response"].endswith("[rag]") for i in items if i["condition"] == "rag")

    summary = results["summary"]
    assert summary["golden_persona"]["personalization"] == 10.0
    assert summary["no_persona"]["utterances"] == 3.0
    assert summary["learned_k1"]["utterances"] == pytest.approx((3 + 1) / 2)
    wr = results["win_rates"]["learned_k1_vs_golden_persona"]
    assert wr["1-3"] == {"win_rate": 0.25, "n": 4.0}  # 2 losses, 2 ties
    assert results["usage"]["judge"]["calls"] == len(items)
    # golden once per persona; learned_k1 once per persona (its persona changed once)
    assert results["usage"]["similarity_judge"]["calls"] == 4
    assert results["usage"]["judge"]["cost_usd"] > 0 and results["cost_usd"] > 0
    assert results["models"]["judge"]["model"] == "judge-model"
    assert "api_key" not in json.dumps(results["config"]).replace("api_key_env", "")

    saved = json.loads((out / "results.json").read_text(encoding="utf-8"))
    assert saved["summary"] == json.loads(json.dumps(summary))
    report = (out / "report.md").read_text(encoding="utf-8")
    assert (
        "| Condition | Helpfulness (0–10) ↑ | Personalization (0–10) ↑ | Utterances (1–3) ↓ "
        "| Satisfied (0–1) ↑ | Persona similarity, LLM judge (0–10) ↑ | Lexical overlap (0–1) "
        "| n (judged sessions) |" in report
    )
    for cond in conds:
        assert f"| {cond} |" in report or f"| {cond} (retriever: " in report
    assert (out / "plot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # resume: a complete run sends nothing
    before = len(fake.requests)
    await run_bench(cfg, opts)
    assert len(fake.requests) == before

    # interrupted: the last two items are lost -> only they run again
    lines = (out / "items.jsonl").read_text(encoding="utf-8").splitlines()
    lost = [json.loads(line) for line in lines[-2:]]
    (out / "items.jsonl").write_text("\n".join(lines[:-2]) + "\n{torn", encoding="utf-8")
    again = await run_bench(cfg, opts)
    assert len(again["items"]) == len(items)
    redone = {(i["condition"], i["persona_id"], i["scene_index"]) for i in lost}
    assert len(fake.requests) > before
    judge_calls = [r for r in fake.requests[before:] if "[personabench:judge]" in str(r)]
    assert len(judge_calls) == len(redone)


def _flat(persona: dict[str, Any]) -> dict[str, Any]:
    from aipersona.core.schema import flatten

    return flatten(persona)


@needs_data
async def test_cli_bench_run_and_generate(scripted: Any, tmp_path: Path) -> None:
    from aipersona.core.cli import main

    fake, _ = scripted
    config = tmp_path / "bench.toml"
    config.write_text(
        f'[llm]\nbase_url = "{fake.base_url}"\nmodel = "m"\nmax_retries = 0\n'
        '[bench]\nlang = "en"\n[bench.judge]\nmodel = "j"\n',
        encoding="utf-8",
    )
    out = tmp_path / "cli-run"
    code = await asyncio.to_thread(
        main,
        [
            "bench", "run", "--config", str(config), "--data", str(DATA), "--out", str(out),
            "--personas", "1", "--scenes", "1", "--conditions", "golden_persona", "learned",
            "--k", "2",
        ],
    )  # fmt: skip
    assert code == 0
    results = json.loads((out / "results.json").read_text(encoding="utf-8"))
    assert results["conditions"] == ["golden_persona", "learned_k2"]
    assert len(results["items"]) == 2
    gen = tmp_path / "cli-gen"
    code = await asyncio.to_thread(
        main,
        [
            "bench", "generate", "--config", str(config), "--out", str(gen),
            "--n-personas", "1", "--lang", "en", "--common-scenes", "1", "--specific-scenes", "0",
        ],
    )  # fmt: skip
    assert code == 0
    assert len(load_personas(gen / "personabench.jsonl")) == 1
    # a bad data path is a user error, not a traceback
    code = await asyncio.to_thread(
        main,
        [
            "bench",
            "run",
            "--config",
            str(config),
            "--data",
            str(tmp_path / "nope"),
            "--out",
            str(out),
        ],
    )
    assert code == 2


def test_jsonl_skips_torn_lines(tmp_path: Path) -> None:
    path = tmp_path / "x.jsonl"
    append_jsonl(path, [{"a": 1}])
    with path.open("a", encoding="utf-8") as fh:
        fh.write('{"a": 2')
    assert list(read_jsonl(path)) == [{"a": 1}]


# -- the real embedded model ------------------------------------------------------------------

local_model = pytest.mark.skipif(
    importlib.util.find_spec("llama_cpp") is None and not os.environ.get("CI"),
    reason="the [local] extra is not installed",
)


@local_model
@needs_data
@pytest.mark.local_model
@pytest.mark.timeout(300)
async def test_local_model_smoke(tmp_path: Path) -> None:
    cfg = Config.from_dict(
        {
            "llm": {"max_tokens": 32, "local": {"n_ctx": 2048}},
            "persona": {"optimizer_max_tokens": 64},
            "bench": {
                "max_turns": 1,
                "judge_max_tokens": 48,
                "simulator_max_tokens": 48,
                "tool_max_tokens": 32,
            },
        }
    )
    out = tmp_path / "local"
    # one released persona and scene, texts shortened so the CPU model finishes quickly
    persona = load_personas(DATA, limit=1, scenes=1)[0]
    scene = persona.scenes[0]
    for name in ("scene_desc", "expected_response", "scene_context", "personalized_query"):
        setattr(scene, name, getattr(scene, name)[:80])
    persona.persona = {"Demographics": persona.persona["Demographics"]}
    data = tmp_path / "one.jsonl"
    append_jsonl(data, [persona.to_json()])
    results = await run_bench(
        cfg,
        RunOptions(
            data=str(data),
            out=str(out),
            personas=1,
            scenes=1,
            conditions=["golden_persona", "learned"],
            k=[1],
        ),
    )
    assert results["conditions"] == ["golden_persona", "learned_k1"]
    assert len(results["items"]) == 2
    for item in results["items"]:
        assert item["user_turns"] == 1 and item["dialogue"][0]["role"] == "user"
        assert isinstance(item["persona"], dict)
    assert (out / "report.md").exists() and (out / "plot.png").exists()
    # the model really used is named, not the [llm] default it replaced
    assert results["models"]["chatbot"]["model"] == "smollm2-135m-instruct"
    report = (out / "report.md").read_text(encoding="utf-8")
    assert "= `smollm2-135m-instruct` (embedded llama_cpp.server" in report


@needs_data
async def test_a_failing_job_does_not_stop_the_others(
    scripted: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from aipersona.personabench import evaluate

    fake, _ = scripted
    cfg = bench_config(fake.base_url, tmp_path)
    out = tmp_path / "fail"
    opts = RunOptions(
        data=str(DATA), out=str(out), personas=1, scenes=1, conditions=["no_persona", "rag"]
    )
    real = evaluate.run_session

    async def broken(ctx: Any, core: Any, condition: str, *args: Any) -> Any:
        if condition == "rag":
            raise RuntimeError("boom")
        return await real(ctx, core, condition, *args)

    monkeypatch.setattr(evaluate, "run_session", broken)
    results = await run_bench(cfg, opts)
    assert [i["condition"] for i in results["items"]] == ["no_persona"]
    assert results["failed_jobs"][0]["condition"] == "rag"
    assert "boom" in (out / "report.md").read_text(encoding="utf-8")
    monkeypatch.setattr(evaluate, "run_session", real)
    results = await run_bench(cfg, opts)
    assert [i["condition"] for i in results["items"]] == ["no_persona", "rag"]
    assert results["failed_jobs"] == []


@needs_data
async def test_chatbot_failure_is_recorded_not_scored(scripted: Any, tmp_path: Path) -> None:
    from tests.fakes.openai_server import Error

    fake, _ = scripted
    fake.push("chat", Error(500))  # the first chatbot call of the only session
    cfg = bench_config(fake.base_url, tmp_path)
    opts = RunOptions(
        data=str(DATA), out=str(tmp_path / "err"), personas=1, scenes=1, conditions=["no_persona"]
    )
    results = await run_bench(cfg, opts)
    (item,) = results["items"]
    assert item["errors"] == ["chatbot: llm_unavailable (the model endpoint answered HTTP 500)"]
    assert item["helpfulness"] is None and item["utterances"] is None
    assert results["summary"]["no_persona"]["helpfulness"] is None
    assert "–" in (tmp_path / "err" / "report.md").read_text(encoding="utf-8")


def test_bench_example_config_loads() -> None:
    from aipersona.core.config import Config
    from aipersona.personabench.settings import load_bench

    root = Path(__file__).resolve().parents[1]
    settings, roles = load_bench(Config.load(root / "bench.example.toml"))
    assert set(roles) == {
        "chatbot",
        "simulator",
        "judge",
        "tool_simulator",
        "generator",
        "embedder",
    }
    assert settings.k == [1, 3, 5]
