"""The synthetic-image part of `reports/report.md`: did guidance work, how real do the images look,
and what the guidance scale trades.

Reads what `generate` (`reports/generation.json`), `gen_metrics` (`reports/gen_metrics.json`),
`upsample` (`reports/upsample.json`), `inpaint` (`reports/inpaint.json`, `inpaint/examples.png`),
`realism` (`reports/realism.json`), `copypaste` (`reports/copypaste.json`) and the sweep (`reports/sweep/tradeoff.csv`,
`guidance_tradeoff.png`) wrote; a part whose file is absent (a pipeline run without that stage)
says so instead of failing the report.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from core.errors import StageError
from core.tables import markdown_table

GENERATION, GEN_METRICS, UPSAMPLE = Path("generation.json"), Path("gen_metrics.json"), Path("upsample.json")
INPAINT, INPAINT_EXAMPLES = Path("inpaint.json"), Path("inpaint/examples.png")
REALISM, COPYPASTE = Path("realism.json"), Path("copypaste.json")
SOURCE_NAMES = {"synthetic": "generated scenes", "inpaint": "insertions", "copypaste": "copy-paste (real cut-outs)"}
TRADEOFF_CSV, TRADEOFF_PNG = Path("sweep/tradeoff.csv"), Path("sweep/guidance_tradeoff.png")


def _read_json(path: Path) -> dict | None:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise StageError(f"{path}: malformed JSON: {err}") from None


def guidance_table(generation: dict) -> pd.DataFrame:
    """Per target class: guided vs same-seed unguided control, as judged by the judge."""
    rows = []
    for name, sets in {**generation["per_class"], "overall": generation["overall"]}.items():
        paired, control, test = sets["guided_paired"], sets["control"], sets["paired_test"]
        gain = None if paired["hit_rate"] is None or control["hit_rate"] is None else paired["hit_rate"] - control["hit_rate"]
        rows.append({"target": name, "guided images": sets["guided"]["n"], "guided hit rate": sets["guided"]["hit_rate"],
                     "paired n": paired["n"], "paired hit rate": paired["hit_rate"],
                     "control hit rate": control["hit_rate"], "hit-rate gain": gain,
                     "wins / losses": f"{test['wins']} / {test['losses']}", "McNemar p": test["p_value"],
                     "judge p guided": paired["mean_judge_prob"], "judge p control": control["mean_judge_prob"]})
    return pd.DataFrame(rows)


def realism_table(gen_metrics: dict) -> pd.DataFrame:
    """FD / KID / precision / recall per image set and target class vs the real reference split."""
    rows = []
    for set_name, result in gen_metrics["sets"].items():
        for target, m in {"overall": result["overall"], **result["per_class"]}.items():
            rows.append({"set": set_name, "target": target, "n gen": m["n_generated"], "n real": m["n_real"],
                         "FD": m["fd"], "KID": m["kid_mean"], "precision": m["precision"], "recall": m["recall"],
                         "judge IS": m["judge_is"], "hit rate": m["judge_hit_rate"]})
    return pd.DataFrame(rows)


def upsample_table(upsample: dict) -> pd.DataFrame:
    """Per method (the one used first): the upsampled images against the real ones at the detector's resolution."""
    methods = sorted(upsample["methods"], key=lambda m: m != upsample["method"])
    return pd.DataFrame([{"method": f"{m} (used)" if m == upsample["method"] else m,
                          "images": upsample["methods"][m]["n_generated"], "FD": upsample["methods"][m]["fd"],
                          "KID": upsample["methods"][m]["kid_mean"], "precision": upsample["methods"][m]["precision"],
                          "recall": upsample["methods"][m]["recall"],
                          "edge energy / real": upsample["methods"][m]["edge_energy_vs_real"]} for m in methods])


def inpaint_table(inpaint: dict) -> pd.DataFrame:
    """Per class and overall: insertions planned, placed, kept, undone by reason; guided vs unguided verified."""
    rows = []
    for name, m in {**inpaint["per_class"], "overall": inpaint["overall"]}.items():
        v, test = m["verified"], m["verified"]["paired_test"]
        gain = (None if v["guided_paired"] is None or v["control"] is None
                else round(v["guided_paired"] - v["control"], 4))
        rows.append({"class": name, "planned": m["planned"], "placed": m["placed"], "kept": m["kept"],
                     **{f"undone: {reason}": n for reason, n in m["undone"].items()},
                     "judge p": m["mean_judge_prob"], "paired n": v["n_pairs"], "verified guided": v["guided_paired"],
                     "verified unguided": v["control"], "gain": gain,
                     "wins / losses": f"{test['wins']} / {test['losses']}", "McNemar p": test["p_value"]})
    return pd.DataFrame(rows)


def detector_realism_table(realism: dict) -> pd.DataFrame:
    """Per synthetic source and class: what the baseline detector makes of its objects, and the gate."""
    rows = []
    for source, result in realism["sources"].items():
        for name, f in result["per_class"].items():
            rows.append({"source": SOURCE_NAMES.get(source, source), "variant": result["variant"], "class": name,
                         "objects": f["objects"], "agreement": f["agreement"], "box IoU": f["box_iou"],
                         "crop FD": f["crop_fd"],
                         "gate": {True: "passed", False: "left out", None: "no objects"}[f["passed"]]})
    return pd.DataFrame(rows)


def gate_lines(realism: dict) -> str:
    """One line per source: the classes the gate left out and how many training images that took away."""
    lines = []
    for source, result in realism["sources"].items():
        failed = [name for name, f in result["per_class"].items() if f["passed"] is False]
        lines.append(f"- `{result['variant']}`: " + (f"left out {', '.join(failed)} ({len(result['gated_out'])} of its "
                                                     f"{result['images']} images)" if failed else "every class passed"))
    return "\n".join(lines) + "\n"


def detector_realism_section(reports: Path) -> str:
    """Markdown of the detector's view of every synthetic source and the quality gate; '' when realism has not run."""
    realism = _read_json(reports / REALISM)
    if realism is None:
        return ""
    s, p = realism["settings"], realism["predict"]
    copypaste = _read_json(reports / COPYPASTE)
    form = {"mask": "ran with instance masks", "box": "ran with box crops, feathered at the edge (no masks in the data)",
            "mask and box": "ran with instance masks where the data have them, feathered box crops elsewhere",
            None: "pasted no object"}
    form_line = "" if copypaste is None else f" Copy-paste {form[copypaste.get('form')]}."
    return "".join([
        f"\n## Judged by the detector: agreement and the quality gate (`{REALISM}`)\n\n",
        f"Each synthetic object as the real-only baseline detector sees it ({len(realism['seeds'])} seeds, conf >= "
        f"{p['conf']}). Agreement: the share of objects it boxes with their class at IoU >= {s['iou']} (a generated "
        "scene's object is its target class, found anywhere in the scene; every guided scene counts, not only those "
        "pseudo_label kept). Box IoU: median IoU of an object's box with the detector's closest box of its class. "
        f"Crop FD: real `{realism['real_split']}` boxes against the source's boxes, square crops in "
        f"`{realism['extractor']}` features (small n inflates FD: compare within a class). A class below agreement "
        f"{s['min_agreement']} is left out of its variant's training images (the gate reads no test image)."
        f"{form_line}\n\n", gate_lines(realism), "\n", markdown_table(detector_realism_table(realism))])


def inpaint_section(reports: Path) -> str:
    """Markdown of what `inpaint` inserted, kept and undone, guided against unguided; '' when it has not run."""
    inpaint = _read_json(reports / INPAINT)
    if inpaint is None:
        return ""
    s = inpaint["settings"]
    parts = [f"\n## Litter inserted into real scenes (`{INPAINT}`)\n\n",
             f"Guided RePaint ({s['steps']} steps, jump length {s['jump_length']}, {s['jump_n_sample']} passes, "
             f"guidance scale {s['guidance_scale']}) into {inpaint['images_planned']} real canvases "
             f"({inpaint['canvases']['train']} train, {inpaint['canvases']['clean']} clean); "
             f"{inpaint['images_written']} images kept at least one insertion and train the `inpaint` variant. "
             "An insertion is kept (verified) when its changed pixels give a box at least "
             f"{s['min_box_px']} px on each side, the patch judge calls the window its class (p >= "
             f"{inpaint['hit_threshold']}) and the insertion raised that class's p more than any other's; "
             "otherwise it is undone (reason in the columns). `verified unguided` renders the same insertions "
             "(seed, window, hole) with guidance off; McNemar p as above.\n\n",
             markdown_table(inpaint_table(inpaint))]
    if inpaint.get("examples") and (reports / INPAINT_EXAMPLES).is_file():
        parts.append(f"\n![inserted litter: before, guided, unguided]({INPAINT_EXAMPLES.as_posix()})\n")
    return "".join(parts)


def synthetic_section(reports: Path) -> str:
    """Markdown for report.md (which lives in `reports`); figures linked relative to it."""
    generation = _read_json(reports / GENERATION)
    gen_metrics = _read_json(reports / GEN_METRICS)
    parts = ["\n# Synthetic images\n"]
    if generation is None:
        parts.append(f"\n`{GENERATION}` not found: the `generate` stage has not run.\n")
    else:
        s = generation["settings"]
        parts += [f"\n## Does guidance work? (`{GENERATION}`)\n\n",
                  f"`{s['sampler']}`, {s['steps']} steps, guidance scale {s['guidance_scale']}. The judge (a clean-image "
                  f"classifier that never guided) calls an image a hit when p(target) >= {generation['hit_threshold']}. "
                  "`paired` are the guided images whose seeds the unguided `control` images share, so the gain is "
                  "the guidance alone. Wins / losses count the pairs where only the guided / only the control image "
                  "is a hit; McNemar p is the exact one-sided test of 'guidance makes no difference' (below 0.05: "
                  "guidance clearly raised the hit rate).\n\n", markdown_table(guidance_table(generation))]
    if gen_metrics is not None:
        parts += [f"\n## How close to real? (`{GEN_METRICS}`)\n\n",
                  f"Features: `{gen_metrics['extractor']}`; real reference: the `{gen_metrics['real_split']}` split. "
                  f"{gen_metrics['note']}\n\n", markdown_table(realism_table(gen_metrics))]
    upsample = _read_json(reports / UPSAMPLE)
    if upsample is not None:
        parts += [f"\n## Upsampler vs plain resampling (`{UPSAMPLE}`)\n\n",
                  f"The {upsample['n_images']} guided images brought to {upsample['image_size']} px, against the real "
                  f"`{upsample['real_split']}` images at that size in `{upsample['extractor']}` features. "
                  f"{upsample['note']}\n\n", markdown_table(upsample_table(upsample))]
    if (reports / TRADEOFF_CSV).is_file():
        table = pd.read_csv(reports / TRADEOFF_CSV)
        table["guidance_scale"] = [f"{s:g}" for s in table["guidance_scale"]]
        parts += [f"\n## Guidance-scale trade-off (`{TRADEOFF_CSV.parent}/`)\n\n",
                  "Same seeds at every scale. Larger scales raise the hit rate and lower recall (variety); pick the "
                  "smallest scale where the hit rate levels off before recall drops or FD climbs (README, "
                  "'Reading the trade-off').\n\n", markdown_table(table)]
        if (reports / TRADEOFF_PNG).is_file():
            parts.append(f"\n![guidance-scale trade-off]({TRADEOFF_PNG.as_posix()})\n")
    return "".join(parts) + inpaint_section(reports) + detector_realism_section(reports)
