"""`webdancer demo` scaled down: every stage runs, the report has what the README
promises, and a resumed run reuses the finished stages."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from webdancer.cli import main

SMALL = [
    "web.pages=300", "qa.crawl_pages=300", "qa.n_crawlqa_train=16", "qa.n_e2hqa_train=8", "qa.n_crawlqa_test=4",
    "qa.n_e2hqa_test=2", "qa.n_crawlqa_val=2", "qa.n_e2hqa_val=1", "model.pretrain_steps=3", "model.pretrain_batch_size=4", "model.hidden_size=128",
    "model.num_layers=2", "model.vocab_size=1024", "sft.steps=2", "sft.batch_size=4",
    "sft.warmup_first_turns_steps=2", "sft.warmup_batch_size=4", "rl.steps=1",
    "rl.prompts_per_step=2", "rl.group_size=2", "rl.mini_batch_prompts=2", "rl.micro_batch_size=4",
    "+rl.algo_options.max_gen_rounds=1", "env.max_turns=3", "env.max_new_tokens=24", "eval.runs=2",
    "threads=1", "wandb_mode=disabled",
]


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("demo") / "run"
    main(["demo", f"out={out}", f"hydra.run.dir={out.parent / 'hydra'}", *SMALL])
    return out


def test_demo_writes_the_report_for_base_sft_and_rl(demo_run: Path) -> None:
    report = json.loads((demo_run / "report.json").read_text())
    for name in ("base", "sft", "rl"):
        r = report[name]
        for key in ("pass_at_1", "pass_at_2", "cons_at_2", "invalid_action_rate", "tool_calls_mean"):
            assert key in r, (name, key)
        assert 0.0 <= r["pass_at_1"] <= r["pass_at_2"] <= 1.0
        assert r["n_questions"] == 6
        assert len(r["pass_at_1_per_run"]) == 2
        assert list(r["pass_at_k_curve"]) == ["1", "2"] and r["pass_at_k_curve"]["2"] == r["pass_at_2"]
    assert set(report["timings_s"]) == {"web", "qa", "trajectories", "model", "sft", "rl", "eval"}
    assert report["info"]["qa"] == {"train": 24, "val": 3, "test": 6}
    assert report["split"] == "test"
    filt = report["info"]["trajectories"]["filter"]
    assert filt["input"] == 24 and 0 < filt["quality"] <= filt["input"]
    first_turns = [json.loads(line)["messages"] for line in (demo_run / "data" / "first_turns.jsonl").open()]
    assert len(first_turns) == filt["quality"]
    assert all([m["role"] for m in msgs].count("assistant") == 1 and msgs[-1]["role"] == "assistant"
               for msgs in first_turns)
    assert (demo_run / "sft" / "warmup" / "final" / "config.json").exists()
    md = (demo_run / "report.md").read_text()
    assert "| rl |" in md and "Pass@1" in md
    gain = report["comparisons"]["rl_vs_sft"]
    assert gain["pass_at_1_gain"] == pytest.approx(report["rl"]["pass_at_1"] - report["sft"]["pass_at_1"])
    assert "| rl vs sft |" in md and "| sft vs base |" in md
    for png in ("accuracy_by_hops.png", "rl_curves.png", "rl_by_hops.png", "sft_curves.png", "pass_at_k.png"):
        assert (demo_run / png).stat().st_size > 1000, png
    assert "rl_by_hops.png" in md and "| model | pass@1 | pass@2 |" in md
    rl_rows = [json.loads(line) for line in (demo_run / "rl" / "metrics.jsonl").open()]
    assert any(k.startswith("by_hops/") and k.endswith("/accuracy") for k in rl_rows[0])
    # every model is a plain HF directory, each evaluation has its own eval report
    for name in ("base", "sft", "rl"):
        assert (demo_run / "eval" / "test" / name / "report.json").exists()
    assert (demo_run / "rl" / "final" / "config.json").exists()


def test_held_out_questions_never_appear_in_training(demo_run: Path) -> None:
    def questions(split: str) -> set[str]:
        lines = (demo_run / "qa" / f"{split}.jsonl").read_text().splitlines()
        return {json.loads(line)["question"] for line in lines}

    train, val, test = questions("train"), questions("val"), questions("test")
    assert len(val) == 3 and not train & test and not train & val and not val & test


def test_resume_reuses_finished_stages(demo_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = (demo_run / "rl" / "final" / "model.safetensors").stat().st_mtime_ns
    main(["demo", f"out={demo_run}", f"hydra.run.dir={demo_run.parent / 'hydra2'}", "resume=true",
          "rerun_from=eval", *SMALL])
    printed = capsys.readouterr().out
    assert "rl: reusing" in printed and "[7/7] eval done" in printed
    assert (demo_run / "rl" / "final" / "model.safetensors").stat().st_mtime_ns == before


def test_eval_on_the_validation_split(demo_run: Path) -> None:
    main(["demo", f"out={demo_run}", f"hydra.run.dir={demo_run.parent / 'hydra3'}", "resume=true",
          "rerun_from=eval", "eval.split=val", "eval.runs=1", *[a for a in SMALL if not a.startswith("eval.runs")]])
    report = json.loads((demo_run / "report.json").read_text())
    assert report["split"] == "val" and report["rl"]["n_questions"] == 3
    assert "(val split)" in (demo_run / "report.md").read_text()


def test_a_gain_counts_only_beyond_the_run_to_run_spread() -> None:
    from webdancer.demo_report import compare

    report = {"sft": {"pass_at_1": 0.5, "pass_at_1_per_run": [0.45, 0.5, 0.55], "invalid_action_rate": 0.2},
              "rl": {"pass_at_1": 0.58, "pass_at_1_per_run": [0.56, 0.58, 0.6], "invalid_action_rate": 0.05}}
    c = compare(report, "rl", "sft")
    assert c["pass_at_1_gain"] == pytest.approx(0.08) and c["run_spread"] == pytest.approx(0.1)
    assert not c["beyond_spread"] and c["invalid_action_rate_change"] == pytest.approx(-0.15)
    # per-run variances 0.0025 and 0.0004, three runs each: SE = sqrt(0.0029 / 3)
    assert c["pass_at_1_gain_se"] == pytest.approx((0.0029 / 3) ** 0.5)
    assert c["gain_in_se"] == pytest.approx(0.08 / (0.0029 / 3) ** 0.5)
    report["rl"].update(pass_at_1=0.7, pass_at_1_per_run=[0.68, 0.7, 0.72])
    assert compare(report, "rl", "sft")["beyond_spread"]
    report["rl"]["pass_at_1_per_run"] = [0.7]
    assert compare(report, "rl", "sft")["pass_at_1_gain_se"] is None
    # identical runs (an untrained model scores 0 in every run): no spread, no ratio
    report.update(sft={"pass_at_1": 0.0, "pass_at_1_per_run": [0.0, 0.0], "invalid_action_rate": 1.0},
                  rl={"pass_at_1": 0.0, "pass_at_1_per_run": [0.0, 0.0], "invalid_action_rate": 1.0})
    c = compare(report, "rl", "sft")
    assert c["pass_at_1_gain_se"] == 0.0 and c["gain_in_se"] is None


def test_unknown_split_is_named() -> None:
    from webdancer.conf.demo import DemoConfig, DemoEval

    with pytest.raises(ValueError, match="eval.split='dev' is not a split"):
        DemoConfig(eval=DemoEval(split="dev"))


@pytest.mark.parametrize(("rl", "message"), [
    ({"filter_on": "format"}, "filter_on='format' is not valid"),
    ({"oversample": 0.5}, "oversample=0.5 must be at least 1.0"),
    ({"prompts_per_step": 6, "mini_batch_prompts": 4}, "prompts_per_step=6 must be a multiple"),
    ({"algo_options": {"clip_hi": 0.3}}, "unknown option.s. clip_hi for algorithm 'dapo'"),
    ({"algo": "dpo"}, "unknown algorithm 'dpo'"),
    ({"after_invalid": "drop"}, "after_invalid='drop' is not valid"),
    ({"surplus": "keep"}, "surplus='keep' is not valid"),
])
def test_a_bad_rl_section_fails_when_the_demo_config_is_read(rl: dict, message: str) -> None:
    from webdancer.conf.demo import DemoConfig, DemoRL

    with pytest.raises((ValueError, KeyError), match=message):
        DemoConfig(rl=DemoRL(**rl))


def test_unknown_stage_is_named() -> None:
    with pytest.raises(ValueError, match="rerun_from='sfft' is not a stage"):
        from webdancer.demo import Stages

        Stages(Path("."), True, "sfft")


@pytest.mark.parametrize(("rl_seed", "expected"), [(None, 7), (3, 3)])
def test_dapo_takes_its_own_seed_or_the_models(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                               rl_seed: int | None, expected: int) -> None:
    from webdancer.algos import rl
    from webdancer.conf.demo import DemoConfig, DemoModel, DemoRL
    from webdancer.demo_stages import rl_stage

    seen = []
    monkeypatch.setattr(rl, "train_rl", lambda cfg: seen.append((cfg.seed, cfg.surplus)))
    cfg = DemoConfig(model=DemoModel(seed=7), rl=DemoRL(seed=rl_seed, surplus="train"))
    assert rl_stage(cfg, tmp_path / "sft", tmp_path / "web", tmp_path / "qa", tmp_path / "rl") == tmp_path / "rl" / "final"
    assert seen == [(expected, "train")]
