"""YOLO training offline: dataset views, variant mixes, a one-epoch train with the network refused."""

import dataclasses
import json
import shutil
import socket

import pandas as pd
import pytest
import yaml

from augment import precision
from core.errors import StageError
from core.params import from_dict
from detection.budget import Plan
from detection.yolo import (
    TrainSettings,
    YoloParams,
    added_images,
    pseudo_split,
    ultralytics_offline,
    variant_splits,
    write_dataset_view,
)
from detection.yolo_train import cpu_trainer, progress_line, train_seeds
from pipelines import train_yolo
from tests.support import TINY_DETECTION, repo_params, settings, write_params


@pytest.fixture
def refuse_network(monkeypatch):
    """Every connection attempt in this process raises, and is recorded."""
    attempts = []

    def refuse(*args, **kwargs):
        attempts.append(args)
        raise OSError("network refused by the test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    return attempts


def fake_pseudo(root, n):
    """A pseudo-label layout with n images (content irrelevant for the mix)."""
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir(parents=True)
    for i in range(n):
        (root / "images" / f"p{i}.png").write_bytes(b"")
        (root / "labels" / f"p{i}.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    pd.DataFrame({"image_id": [f"p{i}" for i in range(n)]}).to_csv(root / "manifest.csv", index=False)
    return root


def test_variant_mix_caps_pseudo_images_by_ratio_and_seed(tmp_path, tiny_prepared):
    prepared = tiny_prepared  # 8 train, 6 val
    fake_pseudo(tmp_path / "pseudo" / "synthetic", 20)
    (tmp_path / "pseudo" / "gate").mkdir(parents=True)
    for source in ("synthetic", "inpaint", "copypaste"):
        (tmp_path / "pseudo" / "gate" / f"{source}.json").write_text(json.dumps({"failed": [], "gated_out": []}))
    params = settings(YoloParams, "yolo", mix={"synthetic_ratio": 1.5})
    splits = variant_splits("augmented", params, prepared, tmp_path / "pseudo")
    names = [item.name for item in splits["train"]]
    assert len(names) == 8 + 12 and sum(n.startswith("synthetic_") for n in names) == 12
    assert [i.name for i in variant_splits("augmented", params, prepared, tmp_path / "pseudo")["train"]] == names
    baseline = variant_splits("baseline", params, prepared, tmp_path / "missing")
    assert len(baseline["train"]) == 8 and len(baseline["val"]) == 6
    with pytest.raises(StageError, match="pseudo/tagged/manifest.csv: not found"):
        variant_splits("selftrain", params, prepared, tmp_path / "pseudo")
    assert pseudo_split(tmp_path / "pseudo" / "synthetic", 0.0, 8, 0) == []
    fake_pseudo(tmp_path / "pseudo" / "copypaste", 20)  # copy-paste and inpaint: the same cap, the same names
    fake_pseudo(tmp_path / "pseudo" / "inpaint", 20)
    pasted, inserted = (added_images(v, params, tmp_path / "pseudo", 8) for v in ("copypaste", "inpaint"))
    assert len(pasted) == 12 and [i.image.name for i in pasted] == [i.image.name for i in inserted]
    assert added_images("baseline", params, tmp_path / "missing", 8) == []
    with pytest.raises(StageError, match="variant 'mosaic': unknown; known: baseline, augmented, selftrain, copypaste"):
        added_images("mosaic", params, tmp_path / "pseudo", 8)


@pytest.mark.parametrize("seeds, message", [
    ([], "yolo.seeds: expected a non-empty list of distinct seeds, got []"),
    ([1, 1], "yolo.seeds: expected a non-empty list of distinct seeds, got [1, 1]"),
    ([0, -1], "yolo.seeds: every seed must be an integer >= 0, got [0, -1]"),
    (3, "yolo.seeds: expected a list"),
])
def test_seeds_are_a_list_of_distinct_non_negative_integers(seeds, message):
    with pytest.raises(StageError) as err:
        settings(YoloParams, "yolo", seeds=seeds)
    assert str(err.value).startswith(f"params.yaml: {message}")


def test_dataset_view_copies_images_and_labels_outside_the_prepared_dir(tmp_path, tiny_prepared):
    prepared = tiny_prepared
    splits = variant_splits("baseline", settings(YoloParams, "yolo"), prepared, tmp_path)
    data_yaml = write_dataset_view(tmp_path / "view", splits, ["a", "b", "c"])
    data = yaml.safe_load(data_yaml.read_text())
    assert data["names"] == {0: "a", 1: "b", 2: "c"} and data["train"] == "images/train"
    assert len(list((tmp_path / "view" / "images" / "train").glob("*.png"))) == 8
    label = (tmp_path / "view" / "labels" / "train" / "real_train_000.txt").read_text()
    assert label and label == (prepared / "labels" / "train" / "train_000.txt").read_text()


@pytest.mark.parametrize("values, message", [
    ({"imgsz": 40}, "yolo.train.imgsz: must be a positive multiple of 32, got 40"),
    ({"amp": True}, "yolo.train.amp: must be false, bf16 or auto, got True"),
    ({"epochs": 20}, "yolo.train: unknown key(s) epochs"),
    ({"batch": 0}, "yolo.train.batch: must be >= 1, got 0"),
    ({"extra": {"channels_last": False}}, "yolo.train.extra: channels_last is set by yolo.train.channels_last"),
    ({"extra": {"epochs": 5}}, "yolo.train.extra: epochs is set by yolo.budget, not by an ultralytics argument"),
    ({"extra": {"val": True}}, "yolo.train.extra: val is set by yolo.budget"),
])
def test_train_settings_reject_bad_values(values, message):
    with pytest.raises(StageError) as err:
        from_dict(TrainSettings, {**repo_params()["yolo"]["train"], **values}, where="params.yaml: yolo.train")
    assert str(err.value).startswith(f"params.yaml: {message}")


def test_the_cpu_trainer_trains_an_nhwc_model_with_its_own_parameters(tmp_path, tiny_prepared):
    import torch

    ultralytics_offline()
    splits = variant_splits("baseline", settings(YoloParams, "yolo"), tiny_prepared, tmp_path)
    data_yaml = write_dataset_view(tmp_path / "view", splits, ["a", "b", "c"])
    trainer = cpu_trainer(channels_last=True)(overrides=dict(
        model="yolov8n.yaml", data=str(data_yaml), epochs=1, imgsz=32, batch=4, device="cpu", workers=0,
        plots=False, val=False, mosaic=0.0, project=str(tmp_path / "runs"), name="r", verbose=False))
    seen = {}

    def at_start(tr):
        convs = [p for p in tr.model.parameters() if p.ndim == 4 and min(p.shape[2:]) > 1]
        seen["nhwc"] = all(p.is_contiguous(memory_format=torch.channels_last) for p in convs)
        seen["nchw"] = any(p.is_contiguous() for p in convs)
        optimized = {id(p) for g in tr.optimizer.param_groups for p in g["params"]}
        seen["optimizer_has_model_params"] = optimized == {id(p) for p in tr.model.parameters()}
        seen["fused"] = [g["fused"] for g in tr.optimizer.param_groups]
        seen["first_conv"] = tr.model.model[0].conv.weight.detach().clone()

    trainer.add_callback("on_train_start", at_start)
    trainer.train()
    assert seen["nhwc"] and not seen["nchw"] and seen["optimizer_has_model_params"]
    assert seen["fused"] == [True, True, True]  # ultralytics' three AdamW groups, one fused kernel each
    saved = torch.load(tmp_path / "runs" / "r" / "weights" / "last.pt", weights_only=False)["model"]
    weight = saved.model[0].conv.weight
    assert weight.is_contiguous() and weight.shape == seen["first_conv"].shape  # saved NCHW
    assert not torch.equal(trainer.model.model[0].conv.weight.detach(), seen["first_conv"])  # it trained


def test_the_cpu_trainer_trains_under_bf16_autocast_when_amp_is_bf16(tmp_path, tiny_prepared):
    import torch

    ultralytics_offline()
    splits = variant_splits("baseline", settings(YoloParams, "yolo"), tiny_prepared, tmp_path)
    data_yaml = write_dataset_view(tmp_path / "view", splits, ["a", "b", "c"])
    trainer = cpu_trainer(channels_last=False)(overrides=dict(
        model="yolov8n.yaml", data=str(data_yaml), epochs=1, imgsz=32, batch=4, device="cpu", workers=0, amp="bf16",
        plots=False, val=False, mosaic=0.0, project=str(tmp_path / "runs"), name="r", verbose=False))
    seen = {}

    def at_start(tr):
        seen["first_conv"] = tr.model.model[0].conv.weight.detach().clone()
        tr.model.model[0].conv.register_forward_hook(lambda module, args, out: seen.update(dtype=out.dtype))

    trainer.add_callback("on_train_start", at_start)
    trainer.train()
    assert seen["dtype"] == torch.bfloat16
    weight = trainer.model.model[0].conv.weight
    assert weight.dtype == torch.float32 and not torch.equal(weight.detach(), seen["first_conv"])  # fp32 weights, trained


def test_the_widened_autocast_leaves_every_other_case_to_ultralytics():
    import torch

    cpu_trainer(channels_last=False)
    from ultralytics.engine import trainer as engine

    with engine.autocast(torch.bfloat16, device="cpu"):
        assert torch.get_autocast_dtype("cpu") == torch.bfloat16 and torch.is_autocast_enabled("cpu")
    with engine.autocast(False, device="cpu"):
        assert not torch.is_autocast_enabled("cpu")


@pytest.mark.parametrize("amp, evidence, expected", [
    ("auto", "CPU flag avx512_bf16", ("bf16", "bf16 (auto: CPU flag avx512_bf16)")),
    ("auto", None, (False, "no (auto: no bf16 instructions on this CPU)")),
    ("bf16", None, ("bf16", "bf16 (set in params.yaml)")),
    (False, "CPU flag avx512_bf16", (False, "no (set in params.yaml)")),
])
def test_amp_auto_takes_bf16_where_the_cpu_has_it(monkeypatch, amp, evidence, expected):
    monkeypatch.setattr(precision, "cpu_bf16_evidence", lambda cpuinfo: evidence)
    monkeypatch.setattr(precision.torch.backends.cpu, "get_cpu_capability", lambda: "AVX512")
    train, chosen = train_yolo.resolve_amp(settings(YoloParams, "yolo", train={"amp": amp, "device": "cpu"}).train)
    assert (train.amp, str(chosen)) == expected


@pytest.mark.parametrize("values, message", [
    ({"parallel": 0}, "yolo.parallel: must be >= 1, got 0"),
    ({"parallel": 2, "train": {"device": [0, 1]}},
     "yolo.parallel: a DDP training (train.device is a list) takes its GPUs alone; set parallel: 1"),
    ({"parallel": 1, "train": {"device": [0, 1]}, "budget": {"epochs": None}},
     "yolo.budget: a DDP training (train.device is a list) cannot search the budget"),
])
def test_parallel_trainings_are_at_least_one_and_never_beside_ddp(values, message):
    with pytest.raises(StageError) as err:
        settings(YoloParams, "yolo", **values)
    assert str(err.value).startswith(f"params.yaml: {message}")


def test_a_progress_line_sums_the_loss_items_and_gives_the_val_map_only_after_a_validation():
    assert progress_line("train_yolo@inpaint seed 2", 20, 150, {"box": 1.0, "cls": 2.0, "dfl": 0.5}, None) == \
        "train_yolo@inpaint seed 2: epoch 20/150, train loss 3.500"
    assert progress_line("s", 3, 9, [1.0, 2.0], {"metrics/mAP50(B)": 0.3691}) == \
        "s: epoch 3/9, train loss 3.000, val mAP50 0.369"


@pytest.mark.slow
def test_seeds_in_parallel_processes_train_the_weights_of_one_after_another_at_the_same_thread_count(
        tmp_path, tiny_prepared, capfd):
    import torch

    params = settings(YoloParams, "yolo", parallel=2)
    data_yaml = write_dataset_view(tmp_path / "view", variant_splits("baseline", params, tiny_prepared, tmp_path),
                                   ["a", "b", "c"])
    for run in ("parallel", "sequential"):
        (tmp_path / run / "models").mkdir(parents=True)
        (tmp_path / run / "logs").mkdir()
    plans = {s: Plan(3, 2) for s in params.seeds}  # a 3-epoch schedule stopped after 2
    metrics = train_seeds(params, plans, data_yaml, tmp_path / "parallel" / "models", tmp_path / "parallel" / "logs",
                          torch_threads=2, label="train_yolo@x")  # two processes at once, 2 // 2 = 1 thread each
    # each process speaks in labelled lines only: no argument dump, model table or progress bar of ultralytics'
    out, err = capfd.readouterr()
    lines = (out + err).splitlines()
    for seed in params.seeds:
        assert [line.split(",")[0] for line in lines if line.startswith(f"train_yolo@x seed {seed}: ")] == [
            f"train_yolo@x seed {seed}: epoch 1/2", f"train_yolo@x seed {seed}: epoch 2/2"]
    assert "val mAP50" in [line for line in lines if line.startswith("train_yolo@x seed 0: epoch 2/2")][0]
    assert not [line for line in lines if "engine/trainer" in line or "Ultralytics" in line or "━" in line]
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train_seeds(dataclasses.replace(params, parallel=1), plans, data_yaml, tmp_path / "sequential" / "models",
                    tmp_path / "sequential" / "logs", torch_threads=1)
    finally:
        torch.set_num_threads(before)
    assert set(metrics) == set(params.seeds) == {0, 1}
    assert [r["epochs"] for r in metrics.values()] == [2, 2]
    for seed in params.seeds:
        weights = [torch.load(tmp_path / run / "models" / f"seed_{seed}" / "best.pt", weights_only=False)["model"]
                   .state_dict() for run in ("parallel", "sequential")]
        assert weights[0].keys() == weights[1].keys()
        assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
        assert (tmp_path / "parallel" / "logs" / f"seed_{seed}" / "results.csv").is_file()
    first = torch.load(tmp_path / "parallel" / "models" / "seed_0" / "best.pt", weights_only=False)["model"].state_dict()
    second = torch.load(tmp_path / "parallel" / "models" / "seed_1" / "best.pt", weights_only=False)["model"].state_dict()
    assert not all(torch.equal(first[k], second[k]) for k in first)  # the seeds differ


@pytest.mark.slow
def test_one_epoch_train_offline_writes_weights_and_curves(tmp_path, tiny_prepared, monkeypatch, refuse_network):
    write_params(tmp_path, **TINY_DETECTION, yolo={"parallel": 1})  # in this process, where the network is refused
    monkeypatch.chdir(tmp_path)
    assert train_yolo.main(["--variant", "baseline"]) == 0
    out = tmp_path / "models" / "yolo" / "baseline"
    assert sorted(p.name for p in out.iterdir()) == ["budget.json", "params.json", "seed_0", "seed_1"]  # TINY seeds
    record = json.loads((out / "params.json").read_text())
    assert record["n_images"] == {"train": 8, "val": 6} and record["epochs"] == 2
    assert set(record["yolo"]) == {"train", "seeds", "parallel", "budget"} and record["yolo"]["train"]["amp"] is False
    # parallel 1: seed 0 searched alone (val every epoch, stopped at min_epochs 2 of a 3-epoch schedule), seed 1 trained
    # the budget it found
    budget = json.loads((out / "budget.json").read_text())
    assert (budget["epochs"], budget["batches"], budget["schedule_epochs"], budget["capped"]) == (2, 2, 3, False)
    assert list(budget["val_map50_per_seed"]) == ["0"] and list(budget["val_map50"]) == ["1", "2"]
    for seed in (0, 1):
        for name in ("best.pt", "last.pt", "results.csv", "args.yaml", "metrics.json"):
            assert (out / f"seed_{seed}" / name).is_file(), name
        assert yaml.safe_load((out / f"seed_{seed}" / "args.yaml").read_text())["seed"] == seed
        curves = pd.read_csv(tmp_path / "reports" / "yolo" / "baseline" / f"seed_{seed}" / "results.csv")
        assert list(curves["epoch"]) == [1, 2] and "metrics/mAP50(B)" in curves.columns
        assert yaml.safe_load((out / f"seed_{seed}" / "args.yaml").read_text())["epochs"] == 3  # the schedule
    assert not list((tmp_path / "data" / "prepared").rglob("*.cache"))  # caches stay in the temp view
    assert refuse_network == []
    # a local pretrained checkpoint (README "Using your own dataset"): trains from it, still offline
    shutil.copy(out / "seed_0" / "best.pt", tmp_path / "pretrained.pt")
    write_params(tmp_path, **TINY_DETECTION, yolo={"parallel": 1, "seeds": [0], "train": {"model": "pretrained.pt"}})
    assert train_yolo.main(["--variant", "baseline"]) == 0
    assert json.loads((out / "params.json").read_text())["yolo"]["train"]["model"] == "pretrained.pt"
    assert yaml.safe_load((out / "seed_0" / "args.yaml").read_text())["pretrained"] is True
    assert refuse_network == []


def copy_train_as_pseudo(prepared, pseudo):
    """A pseudo layout holding copies of the prepared `train` images and their labels."""
    (pseudo / "images").mkdir(parents=True)
    (pseudo / "labels").mkdir()
    names = []
    for image in sorted((prepared / "images" / "train").glob("*.png")):
        shutil.copy(image, pseudo / "images" / f"cp_{image.name}")
        shutil.copy(prepared / "labels" / "train" / f"{image.stem}.txt", pseudo / "labels" / f"cp_{image.stem}.txt")
        names.append(f"cp_{image.stem}")
    pd.DataFrame({"image_id": names}).to_csv(pseudo / "manifest.csv", index=False)


@pytest.mark.slow
def test_a_variant_trains_the_recorded_budgets_batches_on_the_baselines_schedule(tmp_path, tiny_prepared, monkeypatch,
                                                                                capsys):
    copy_train_as_pseudo(tiny_prepared, tmp_path / "data" / "pseudo" / "copypaste")  # 8 added: 16 images, 2 batches
    (tmp_path / "data" / "pseudo" / "gate").mkdir()
    (tmp_path / "data" / "pseudo" / "gate" / "copypaste.json").write_text(json.dumps({"failed": [], "gated_out": []}))
    (tmp_path / "models" / "yolo" / "baseline").mkdir(parents=True)
    budget = {"epochs": 4, "batches_per_epoch": 1, "batches": 4, "schedule_epochs": 6}  # 4 batches of a 6-batch schedule
    (tmp_path / "models" / "yolo" / "baseline" / "budget.json").write_text(json.dumps(budget))
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "models" / "yolo" / "copypaste"
    for equal_steps, epochs, schedule in ((True, 2, 3), (False, 4, 6)):
        write_params(tmp_path, **TINY_DETECTION, yolo={"parallel": 1, "seeds": [0], "equal_steps": equal_steps,
                                                       "mix": {"synthetic_ratio": 1.0}})
        assert train_yolo.main(["--variant", "copypaste"]) == 0
        record = json.loads((out / "params.json").read_text())
        assert (record["n_images"]["train"], record["epochs"], record["batches"]) == (16, epochs, 2 * epochs)
        assert set(record["yolo"]) == {"train", "seeds", "parallel", "equal_steps", "mix"}
        assert yaml.safe_load((out / "seed_0" / "args.yaml").read_text())["epochs"] == schedule
        curves = pd.read_csv(tmp_path / "reports" / "yolo" / "copypaste" / "seed_0" / "results.csv")
        assert list(curves["epoch"]) == list(range(1, epochs + 1))
    (tmp_path / "models" / "yolo" / "baseline" / "budget.json").unlink()
    capsys.readouterr()
    assert train_yolo.main(["--variant", "copypaste"]) == 2
    assert capsys.readouterr().err == ("error: models/yolo/baseline/budget.json: not found; run train_yolo@baseline "
                                       "first (it finds the detector budget)\n")


def test_a_missing_pretrained_checkpoint_is_one_line_and_never_downloaded(tmp_path, tiny_prepared, monkeypatch, capsys,
                                                                          refuse_network):
    write_params(tmp_path, **TINY_DETECTION, yolo={"train": {"model": "yolov8n.pt"}})
    monkeypatch.chdir(tmp_path)
    assert train_yolo.main(["--variant", "baseline"]) == 2
    assert capsys.readouterr().err == ("error: params.yaml: yolo.train.model: yolov8n.pt: no such file; the pipeline "
                                       "never downloads weights (download the checkpoint once yourself and give its "
                                       "path)\n")
    assert refuse_network == [] and not (tmp_path / "yolov8n.pt").exists()


def test_stage_fails_with_one_line_without_prepared_data(tmp_path, monkeypatch, capsys):
    write_params(tmp_path, **TINY_DETECTION)
    monkeypatch.chdir(tmp_path)
    assert train_yolo.main(["--variant", "baseline"]) == 2
    assert capsys.readouterr().err == "error: data/prepared/data.yaml: not found; run the import stage first\n"
    assert not (tmp_path / "models" / "yolo" / "baseline").exists()


def test_importing_ultralytics_leaves_pil_errors_alone(tmp_path):
    from PIL import Image, UnidentifiedImageError

    from detection.yolo import ultralytics_offline

    ultralytics_offline()
    (tmp_path / "bad.png").write_bytes(b"not an image")
    with pytest.raises(UnidentifiedImageError):
        Image.open(tmp_path / "bad.png")
