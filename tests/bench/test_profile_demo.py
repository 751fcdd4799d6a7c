"""bench/profile_demo.py: stage times from the moments dvc announces each stage, and the images each stage makes."""

import io
import json

import pytest

from tests.support import load_bench, repo_params

profile = load_bench("profile_demo")


class FakeRepro:
    """A `dvc repro` process that prints `lines` and exits with `returncode`."""

    def __init__(self, lines, returncode=0):
        self.stdout, self.returncode = io.BytesIO("".join(lines).encode()), returncode

    def wait(self):
        return self.returncode


def test_a_stage_runs_from_its_announcement_to_the_next(monkeypatch):
    ticks = iter(range(0, 10_000, 60))
    monkeypatch.setattr(profile.time, "perf_counter", lambda: next(ticks))
    lines = ["Running stage 'demo_data':\n", "> python -m pipelines.demo_data\n", "Stage 'import' didn't change\n",
             "Running stage 'train_unet':\n", "step 1\n"]
    monkeypatch.setattr(profile.subprocess, "Popen", lambda *a, **k: FakeRepro(lines))
    seconds, total = profile.timed_repro([])
    # perf_counter: start 0, demo_data announced at 60, train_unet at 120, end at 180
    assert seconds == {"demo_data": 60, "train_unet": 60} and total == 180


def test_a_failed_repro_stops_with_its_exit_code(monkeypatch):
    monkeypatch.setattr(profile.subprocess, "Popen", lambda *a, **k: FakeRepro([], returncode=3))
    with pytest.raises(SystemExit, match="dvc repro failed \\(exit code 3\\)"):
        profile.timed_repro([])


def test_images_per_stage_from_params_and_outputs(tmp_path, monkeypatch):
    params = repo_params()
    monkeypatch.chdir(tmp_path)
    unet = params["unet"]
    assert profile.images_made("train_unet", params) == unet["max_steps"] * unet["batch_size"] * unet["grad_accum"]
    judge = params["patch_judge"]
    assert profile.images_made("train_patch_judge", params) == judge["max_steps"] * judge["batch_size"]
    assert profile.images_made("generate", params) is None  # not made yet
    for folder, n in (("data/synthetic/images", 3), ("data/synthetic/control/images", 2), ("data/sweep/scale_30", 4)):
        (tmp_path / folder).mkdir(parents=True)
        for i in range(n):
            (tmp_path / folder / f"{i}.png").write_bytes(b"")
    assert profile.images_made("generate", params) == 5 and profile.images_made("sweep@30", params) == 4
    (tmp_path / "reports").mkdir()
    (tmp_path / "reports/inpaint.json").write_text(json.dumps({"overall": {"placed": 10, "verified": {"n_pairs": 4}}}))
    assert profile.images_made("inpaint", params) == 14
    assert profile.images_made("evaluate", params) is None
