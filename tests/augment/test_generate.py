"""Stage generate: quotas, the image plan, sharding, and the stage end to end on tiny saved models."""

import json
from pathlib import Path

import pandas as pd
import pytest
import torch
from PIL import Image

from augment import precision
from augment.generate import (
    ImageJob,
    Rendered,
    load_models,
    plan_batches,
    plan_images,
    plan_quota,
    render_shard,
    report,
)
from augment.settings import GenerateSettings
from core.errors import StageError
from core.params import section
from pipelines import generate as stage
from scenes.prepared import load_manifest
from scenes.synthetic import MANIFEST_COLUMNS
from tests import support
from tests.support import TINY_CLASSES, TINY_GENERATE, TINY_SIZE, write_params, write_tiny_models


@pytest.fixture
def stage_dir(tiny_prepared, tmp_path, monkeypatch) -> Path:
    write_tiny_models(tmp_path)
    write_params(tmp_path, generate=TINY_GENERATE)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def settings(**overrides) -> GenerateSettings:
    return support.settings(GenerateSettings, "generate", **{**TINY_GENERATE, **overrides})


def test_balance_quota_tops_classes_up_to_factor_times_the_commonest(tiny_prepared):
    tags = load_manifest(tiny_prepared, ("train",))["tags"]  # train counts: bottle 3, can 4, paper 2
    assert plan_quota(settings(balance_factor=1.5, min_per_class=0), TINY_CLASSES, tags) == \
        {"bottle": 3, "can": 2, "paper": 4}  # ceil(1.5 * 4) - n_c
    assert plan_quota(settings(balance_factor=1.0, min_per_class=1), TINY_CLASSES, tags) == \
        {"bottle": 1, "can": 1, "paper": 2}
    assert plan_quota(settings(min_per_class=0), TINY_CLASSES, [("can", "can"), ()]) == \
        {"bottle": 1, "can": 0, "paper": 1}  # a class counts once per image


def test_explicit_quota_and_unknown_class():
    assert plan_quota(settings(quota={"can": 4}), TINY_CLASSES, []) == {"bottle": 0, "can": 4, "paper": 0}
    with pytest.raises(StageError, match="unknown class.*glass"):
        plan_quota(settings(quota={"glass": 1}), TINY_CLASSES, [])


def test_plan_controls_reuse_the_guided_seeds_and_seeds_ignore_other_quotas():
    jobs = plan_images({"bottle": 3, "can": 1, "paper": 0}, TINY_CLASSES, settings(control_per_class=2))
    assert [j.image_id for j in jobs] == ["bottle_00000", "bottle_00001", "bottle_00002", "can_00000",
                                          "control_bottle_00000", "control_bottle_00001", "control_can_00000"]
    assert [j.index for j in jobs] == list(range(7))
    by_id = {j.image_id: j for j in jobs}
    for control in (j for j in jobs if not j.guided):
        twin = by_id[control.image_id.removeprefix("control_")]
        assert (control.seed, control.target) == (twin.seed, twin.target)
    assert len({j.seed for j in jobs if j.guided}) == 4
    other = plan_images({"bottle": 1, "can": 1, "paper": 0}, TINY_CLASSES, settings())
    assert other[1].seed == by_id["can_00000"].seed
    assert [len(b) for b in plan_batches(jobs, 3)] == [3, 1, 3]  # guided and controls never share a batch


@pytest.mark.parametrize("values, message", [
    ({"temperature": 1}, "generate: unknown key"),
    ({"sampler": "ddpm", "eta": 0.5}, "generate.eta: 0.5 is only used by ddim"),
    ({"quota": "equal"}, "generate.quota: 'equal' is neither 'balance' nor a mapping"),
    ({"quota": {"can": -1}}, "generate.quota: counts must be integers >= 0"),
    ({"sampler": "heun"}, "generate.sampler: 'heun' is not one of ddpm, ddim, dpmsolver"),
    ({"steps": 0}, "generate.steps: must be >= 1, got 0"),
])
def test_bad_settings_fail_with_one_line(values, message):
    with pytest.raises(StageError, match=f"^params.yaml: {message}"):
        section(GenerateSettings, "generate", support.tiny_params(generate=values))


def test_report_pairs_guided_with_same_seed_controls_and_tests_them_with_exact_mcnemar():
    def rendered(index, target, seed, guided, judge_prob):
        return Rendered(ImageJob(index, f"i{index}", target, seed, guided), target_prob=0.5, judge_prob=judge_prob)

    # bottle: 6 pairs -> 4 wins (guided hit, control miss), 1 loss, 1 tie; can: 1 pair, a tie; 1 unpaired guided
    guided_p = [0.9, 0.8, 0.7, 0.6, 0.2, 0.9]
    control_p = [0.1, 0.2, 0.3, 0.4, 0.6, 0.9]
    items = [rendered(k, 0, 100 + k, True, p) for k, p in enumerate(guided_p)]
    items += [rendered(6, 1, 200, True, 0.9), rendered(7, 1, 201, True, 0.1)]
    items += [rendered(8 + k, 0, 100 + k, False, p) for k, p in enumerate(control_p)]
    items += [rendered(14, 1, 200, False, 0.8)]
    result = report(items, settings(), ["bottle", "can"])
    bottle = result["per_class"]["bottle"]
    # P(X >= 4), X ~ Binomial(5, 1/2) = (5 + 1) / 32
    assert bottle["paired_test"] == {"wins": 4, "losses": 1, "p_value": pytest.approx(6 / 32)}
    assert (bottle["guided_paired"]["hit_rate"], bottle["control"]["hit_rate"]) == (0.8333, 0.3333)  # rounded to 4
    can = result["per_class"]["can"]
    assert can["guided"]["n"] == 2 and can["guided_paired"]["n"] == 1
    assert can["paired_test"] == {"wins": 0, "losses": 0, "p_value": 1.0}
    assert result["overall"]["paired_test"]["wins"] == 4 and result["overall"]["paired_test"]["losses"] == 1


@pytest.mark.slow
def test_stage_writes_images_manifest_controls_and_report(stage_dir, capsys):
    assert stage.main([]) == 0
    manifest = pd.read_csv(stage_dir / "data/synthetic/manifest.csv", keep_default_na=False)
    assert tuple(manifest.columns) == MANIFEST_COLUMNS
    assert manifest["target"].tolist() == ["bottle", "can", "paper", "paper"]  # quota 1, 1, 2
    assert set(manifest["guidance_scale"]) == {1000.0} and set(manifest["sampler"]) == {"ddim"}
    pngs = sorted(p.name for p in (stage_dir / "data/synthetic/images").glob("*.png"))
    assert pngs == sorted(Path(p).name for p in manifest["path"])
    image = Image.open(stage_dir / "data/synthetic" / manifest["path"][0])
    assert image.size == (TINY_SIZE, TINY_SIZE) and image.mode == "RGB"

    control = pd.read_csv(stage_dir / "data/synthetic/control/manifest.csv", keep_default_na=False)
    assert control["target"].tolist() == TINY_CLASSES and set(control["guidance_scale"]) == {0.0}
    assert control["seed"].tolist() == manifest.drop_duplicates("target")["seed"].tolist()
    assert all((stage_dir / "data/synthetic/control" / p).is_file() for p in control["path"])

    report = json.loads((stage_dir / "reports/generation.json").read_text())
    assert report["quota"] == {"bottle": 1, "can": 1, "paper": 2}
    assert report["overall"]["guided"]["n"] == 4 and report["overall"]["control"]["n"] == 3
    assert report["per_class"]["paper"]["guided_paired"]["n"] == 1
    guided = report["overall"]["guided"]  # the report's rates are those of the manifest's probabilities
    assert guided["hit_rate"] == pytest.approx((manifest["judge_prob"] >= 0.5).mean(), abs=1e-4)
    assert guided["mean_judge_prob"] == pytest.approx(manifest["judge_prob"].mean(), abs=1e-4)
    assert guided["mean_target_prob"] == pytest.approx(manifest["target_prob"].mean(), abs=1e-4)
    for groups in [report["overall"], *report["per_class"].values()]:
        assert groups["paired_test"]["wins"] + groups["paired_test"]["losses"] <= groups["control"]["n"]
    assert report["settings"]["guidance_scale"] == 1000.0
    assert report["overall"]["guided_paired"]["mean_target_prob"] > report["overall"]["control"]["mean_target_prob"]
    assert json.loads((stage_dir / "data/synthetic/images/params.json").read_text())["quota"] == report["quota"]
    assert not list((stage_dir / "data/synthetic").glob(".*.tmp"))
    assert "generated 4 guided + 3 control images" in capsys.readouterr().out


@pytest.mark.slow
def test_two_shards_equal_the_single_process_output(stage_dir):
    models = load_models(Path("models/unet"), Path("models/classifier"), Path("models/judge"), TINY_CLASSES)
    config = settings(batch_size=1, sampler="dpmsolver++")
    jobs = plan_images({"bottle": 2, "can": 1, "paper": 0}, TINY_CLASSES, config)
    single = render_shard(models, config, jobs, stage_dir / "one", stage_dir / "one_control")
    shards = [render_shard(models, config, jobs, stage_dir / "two", stage_dir / "two_control", k, 2) for k in (0, 1)]
    assert {r.job.index for r in shards[0]}.isdisjoint({r.job.index for r in shards[1]})
    assert sorted(shards[0] + shards[1], key=lambda r: r.job.index) == single
    for one, two in (("one", "two"), ("one_control", "two_control")):
        files = sorted(p.relative_to(stage_dir / one) for p in (stage_dir / one).rglob("*.png"))
        assert files and files == sorted(p.relative_to(stage_dir / two) for p in (stage_dir / two).rglob("*.png"))
        assert all((stage_dir / one / f).read_bytes() == (stage_dir / two / f).read_bytes() for f in files)


def test_mismatched_judge_stops_the_stage_with_one_line(tiny_prepared, tmp_path, monkeypatch, capsys):
    write_tiny_models(tmp_path, judge_names=["bottle", "can", "glass"])
    write_params(tmp_path, generate=TINY_GENERATE)
    monkeypatch.chdir(tmp_path)
    assert stage.main([]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: models/judge: class names") and "\n" not in err
    assert not (tmp_path / "data/synthetic").exists()


def test_missing_unet_weights_stop_the_stage_with_one_line(stage_dir, capsys):
    (stage_dir / "models/unet/diffusion_pytorch_model.safetensors").unlink()
    assert stage.main([]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "error: models/unet/diffusion_pytorch_model.safetensors: not found; run the train_unet stage first"
    assert not (stage_dir / "data/synthetic").exists()


def test_the_unet_samples_at_the_precision_asked_and_the_classifiers_in_fp32(stage_dir):
    x, t = torch.rand(2, 3, TINY_SIZE, TINY_SIZE) * 2 - 1, torch.tensor([500, 500])
    paths = [stage_dir / "models" / name for name in ("unet", "classifier", "judge")]
    fp32, bf16 = (load_models(*paths, TINY_CLASSES, precision=p) for p in ("no", "bf16"))
    with torch.no_grad():
        for model in ("unet", "classifier", "judge"):
            out32, out16 = (getattr(models, model)(x, t) for models in (fp32, bf16))
            out32, out16 = (getattr(out, "sample", out) for out in (out32, out16))
            assert out16.dtype == torch.float32
            assert torch.equal(out32, out16) == (model != "unet")


@pytest.mark.slow
def test_auto_precision_is_resolved_logged_and_recorded_with_the_images(stage_dir, monkeypatch, capsys):
    write_params(stage_dir, generate={**TINY_GENERATE, "mixed_precision": "auto"})
    monkeypatch.setattr(precision, "cpu_bf16_evidence", lambda cpuinfo: "CPU flag avx512_bf16")
    assert stage.main([]) == 0
    assert "generate: mixed precision bf16 (auto: CPU flag avx512_bf16)" in capsys.readouterr().out
    params = json.loads((stage_dir / "data/synthetic/images/params.json").read_text())
    assert params["generate"]["mixed_precision"] == "bf16"
    assert json.loads((stage_dir / "reports/generation.json").read_text())["settings"]["mixed_precision"] == "bf16"
