"""A bundle whose manifest fields or arrays are wrong is refused with the field named,
never a traceback or NaN scores; also when whoever damaged it updated the hashes."""
import json
import shutil

import cv2
import numpy as np
import pytest
from click.testing import CliRunner
from helpers import damaged

from stpr.runtime.bundle.load import load_bundle
from stpr.runtime.bundle.manifest import BundleError
from stpr.runtime.cli import run_cli


def _save(folder, name, fn):
    a = np.load(folder / name, allow_pickle=False)
    fn(a)
    np.save(folder / name, a, allow_pickle=False)


CASES = {
    "no preprocess.size": (lambda m, d: m["preprocess"].pop("size"), "preprocess.size is missing"),
    "tau 0": (lambda m, d: m["routing"].update(tau=0), "routing.tau is 0: must be a finite number > 0"),
    "frames 0": (lambda m, d: m["preprocess"].update(frames=0), "preprocess.frames is 0: must be an integer >= 1"),
    "float class_to_expert": (lambda m, d: m["class_to_expert"].__setitem__(0, 0.5),
                              "class_to_expert must be a list of integer expert indices, found 0.5"),
    "expert out of range": (lambda m, d: m["class_to_expert"].__setitem__(0, 7), "class_to_expert holds [7]"),
    "std 0": (lambda m, d: m["preprocess"].update(std=[0, 1, 1]), "preprocess.std is [0, 1, 1]"),
    "file outside": (lambda m, d: m["experts"].__setitem__(0, "../expert_0.onnx"),
                     "experts[0] is '../expert_0.onnx': must be a file name inside the bundle"),
    "NaN anchor": (lambda m, d: _save(d, "anchors.npy", lambda a: a.__setitem__((0, 0), np.nan)),
                   "'anchors.npy' (anchors) holds 1 NaN or inf values"),
    "inf text": (lambda m, d: _save(d, "text_embeddings.npy", lambda a: a.__setitem__((2, 3), np.inf)),
                 "'text_embeddings.npy' (text_embeddings) holds 1 NaN or inf values"),
    "td without calibration": (lambda m, d: m.pop("td_calibration"), "td_calibration is None: must be a file name"),
    "calibration spread 0": (lambda m, d: _save(d, "td_calibration.npy", lambda a: a.__setitem__((0, -1), 0.0)),
                             "a score spread <= 0"),
    "unknown threshold text": (lambda m, d: m["unknown"].update(threshold="high"),
                               "unknown.threshold is 'high': must be a finite number"),
    "unknown score foreign": (lambda m, d: m["unknown"].update(score="vibes"),
                              "unknown.score is 'vibes': must be one of"),
    "unknown spread 0": (lambda m, d: m["unknown"]["standardise"]["margin"].__setitem__(1, 0.0),
                         "unknown.standardise is"),
    "unknown report outside": (lambda m, d: m["unknown"].update(report="../openset.json"),
                               "unknown.report is '../openset.json': must be a file name inside the bundle"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_field_is_a_bundle_error_naming_it(demo, tmp_path, case):
    edit, message = CASES[case]
    damaged(demo[2], tmp_path / "b", edit)
    with pytest.raises(BundleError, match=message.replace("[", "\\[").replace("(", "\\(").replace(")", "\\)")):
        load_bundle(tmp_path / "b")
    events = tmp_path / "ev.jsonl"
    res = CliRunner().invoke(run_cli.main, ["--bundle", str(tmp_path / "b"), "--camera", "0", "--headless",
                                            "--jsonl", str(events)])
    assert res.exit_code == 1 and message in res.output and "Traceback" not in res.output
    assert not events.exists()  # refused before a single event (no bare NaN can reach it)


def test_corrupt_onnx_with_updated_hash_is_named(demo, tmp_path):
    def corrupt(m, d):
        (d / "experts.onnx").write_bytes(b"\x08\x07garbage" * 100)  # the fused graph: what stpr-run loads

    damaged(demo[2], tmp_path / "b", corrupt)
    res = CliRunner().invoke(run_cli.main, ["--bundle", str(tmp_path / "b"), "--camera", "0", "--headless"])
    assert res.exit_code == 1 and "Traceback" not in res.output
    assert "onnxruntime cannot load 'experts.onnx'" in res.output and "re-export the bundle" in res.output


def test_a_bundle_refused_for_its_manifest_can_be_replaced_with_force(demo, tmp_path):
    from stpr.export import export_run

    out = tmp_path / "b"
    shutil.copytree(demo[2], out)
    m = json.loads((out / "manifest.json").read_text())
    m["routing"]["tau"] = 0.5  # hand edit: the manifest no longer matches its sha256
    (out / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(BundleError, match="does not match its manifest_sha256"):
        load_bundle(out)
    export_run(demo[1], out, task=0, force=True)
    assert load_bundle(out).manifest["source"]["task"] == 0


def test_manifest_whose_frames_disagree_with_the_graphs_is_refused_in_one_line(demo, tmp_path):
    """A resealed manifest with another T passes the field checks; the graphs' own input
    shapes catch it before any frame is read."""
    from stpr.runtime.engine.recognizer import Recognizer

    _, _, bundle, _ = demo
    bad = tmp_path / "t4"
    damaged(bundle, bad, lambda m, d: (m["dims"].update(T=4), m["preprocess"].update(frames=4)))
    b = load_bundle(bad)  # the fields agree with each other
    with pytest.raises(BundleError, match=r"manifest says \[4, 64\].*re-export"):
        Recognizer(b).__enter__()
    frames = tmp_path / "frames"
    frames.mkdir()
    cv2.imwrite(str(frames / "0.png"), np.zeros((64, 64, 3), np.uint8))
    res = CliRunner().invoke(run_cli.main, ["--bundle", str(bad), "--frames", str(frames), "--headless"])
    assert res.exit_code == 1 and "does not match its graphs" in res.output and "Traceback" not in res.output
