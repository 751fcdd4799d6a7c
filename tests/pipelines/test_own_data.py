"""README "Walk-through: a partly labelled dataset" on tiny params: a boxed COCO dataset of one's own, a
pool of tagged, clean and unknown images, `split.mode: use_all_boxes`, then the whole `dvc repro`."""

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
import yaml

from tests.pipelines.test_pipeline_e2e import dvc, fresh_copy
from tests.support import tiny_params

N_BOXED = 32     # of the tiny demo's 48 images: the rest become the pool
N_KNOWN = 6      # pool images listed in tags.csv with their tags (or `clean`)


def own_dataset(workdir: Path) -> dict[str, int]:
    """mydata/ (COCO, the first N_BOXED demo images) and data/unlabelled/road/ (the others, the first N_KNOWN
    of them tagged in tags.csv, one listed with an empty cell); returns the pool's expected kinds."""
    demo = workdir / "data/raw/demo"
    coco = json.loads((demo / "annotations.json").read_text())
    names = {c["id"]: c["name"] for c in coco["categories"]}
    images = sorted(coco["images"], key=lambda i: i["id"])
    boxed, pool = images[:N_BOXED], images[N_BOXED:]
    for image in boxed:
        (workdir / "mydata" / image["file_name"]).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(demo / image["file_name"], workdir / "mydata" / image["file_name"])
    kept = {i["id"] for i in boxed}
    (workdir / "mydata/annotations.json").write_text(json.dumps(
        {**coco, "images": boxed, "annotations": [a for a in coco["annotations"] if a["image_id"] in kept]}))
    rows, kinds = ["file,tags"], {"tagged": 0, "clean": 0, "unknown": len(pool) - N_KNOWN}
    for k, image in enumerate(pool):
        name = f"road/{Path(image['file_name']).name}"
        shutil.copy(demo / image["file_name"], workdir / "data/unlabelled" / name)
        tags = sorted({names[a["category_id"]] for a in coco["annotations"] if a["image_id"] == image["id"]})
        if k < N_KNOWN:
            rows.append(f"{name},{';'.join(tags) or 'clean'}")
            kinds["tagged" if tags else "clean"] += 1
        elif k == N_KNOWN:
            rows.append(f"{name},")  # listed, content unknown
    (workdir / "data/unlabelled/tags.csv").write_text("\n".join(rows) + "\n")
    return kinds


@pytest.fixture(scope="module")
def own_data_run(tmp_path_factory) -> tuple[Path, dict[str, int]]:
    params = tiny_params()
    workdir = fresh_copy(tmp_path_factory.mktemp("own"), params)
    (workdir / "data/unlabelled/road").mkdir()
    dvc(workdir, "repro", "demo_data")
    kinds = own_dataset(workdir)
    params["dataset"]["path"] = "mydata"
    params["split"]["mode"] = "use_all_boxes"
    (workdir / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    dvc(workdir, "repro")
    return workdir, kinds


@pytest.mark.slow
def test_a_partly_labelled_dataset_runs_end_to_end_with_its_pool_kept_apart(own_data_run):
    workdir, kinds = own_data_run
    report = json.loads((workdir / "reports/import.json").read_text())
    assert report["split_mode"] == "use_all_boxes"
    assert {k: report["unlabelled"][k] for k in kinds} == kinds and report["unlabelled"]["images"] == 48 - N_BOXED
    manifest = pd.read_csv(workdir / "data/prepared/manifest.csv", keep_default_na=False)
    pooled = manifest["image_id"].str.startswith("unlabelled__")
    assert set(manifest.loc[~pooled, "split"]) == {"train", "val", "test"}  # no boxes withheld
    assert (manifest.loc[pooled, "split"] == "unlabelled").sum() == kinds["unknown"]
    assert (manifest.loc[pooled, "split"] == "tagged").sum() == kinds["tagged"] + kinds["clean"]
    assert len(list((workdir / "data/prepared/labels/train").glob("*.txt"))) == (manifest["split"] == "train").sum()
    # the scene UNet learned from every pool image; the classifier's and the canvases' images are known ones
    training = json.loads((workdir / "reports/unet/training.json").read_text())
    assert training["n_images"] == manifest["split"].isin(["train", "tagged", "unlabelled"]).sum()
    assert json.loads((workdir / "reports/copypaste.json").read_text())["canvases"]["clean"] <= kinds["clean"]
    # self-training pool: the tagged pool images checked against their tags, the unknown ones unchecked
    pseudo = json.loads((workdir / "reports/pseudo_label_tagged.json").read_text())
    assert pseudo["total"]["images"] == 48 - N_BOXED and pseudo["per_group"]["(unknown)"]["images"] == kinds["unknown"]
    metrics = json.loads((workdir / "reports/summary.json").read_text())
    assert all(0 <= metrics[v]["mAP50"] <= 1 for v in ("baseline", "selftrain", "inpaint"))
    assert (workdir / "reports/report.md").read_text().startswith("#")
