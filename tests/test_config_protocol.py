"""Configs (dataclasses + YAML + --set) and the protocol builder."""
import pytest

from stpr.train.config import Config
from stpr.train.config_load import load_config, parse_set, valid_keys
from stpr.train.data.protocol import build_tasks, class_order, parse_protocol
from stpr.train.errors import StprError


def test_demo_config_lists_only_differences_and_resolves():
    cfg = load_config("demo")
    assert cfg.model.name == "stpr-tiny" and cfg.model.pretrained == "synthetic-shapes"
    assert cfg.method.lambda_fssd == 10.0 and load_config("paper").method.lambda_fssd == 1.0
    assert cfg.method.routing == "td" and cfg.method.distill == "fssd"  # defaults kept
    paper = load_config("paper")
    assert (paper.optim.lr, paper.optim.batch_size, paper.optim.epochs_base, paper.optim.epochs_incremental) == (
        0.01, 40, 60, 30)


def test_set_overrides_are_typed():
    cfg = load_config("demo", parse_set(["optim.lr=0.5", "data.root=null", "model.templates=[\"x {}\", \"y {}\"]"]))
    assert cfg.optim.lr == 0.5 and isinstance(cfg.optim.lr, float)
    assert cfg.data.root is None and cfg.model.templates == ["x {}", "y {}"]
    assert parse_set(["model.templates=a {} b"])["model.templates"] == "a {} b"


@pytest.mark.parametrize(
    "override, message",
    [
        ({"optim.lrr": 1}, "unknown config key 'optim.lrr'; valid keys: model.name"),
        ({"method.routing": "best"}, "choose one of: td, td-raw, avg, clip, adapter, oracle"),
        ({"optim.batch_size": "many"}, "not a valid int"),
        ({"optim.batch_size": 2.5}, "not a valid int"),
    ],
)
def test_bad_config_values_are_named(override, message):
    with pytest.raises(StprError, match=message):
        load_config("demo", override)


def test_unknown_config_name_and_bad_set_syntax():
    with pytest.raises(StprError, match=r"built-in: demo, hmdb51_26\+1x25, .*paper, ucf101_51\+10x5"):
        load_config("nope")
    with pytest.raises(StprError, match="key=value"):
        parse_set(["optim.lr"])
    assert "method.lambda_fssd" in valid_keys(Config())


def test_protocol_sizes_and_disjoint_tasks():
    tasks = build_tasks("51+10x5", 101, class_order(101, "seeded", 1000))
    assert [len(t) for t in tasks] == [51, 10, 10, 10, 10, 10]
    flat = [c for t in tasks for c in t]
    assert sorted(flat) == list(range(101))
    assert [len(t) for t in build_tasks("10x40", 400, list(range(400)))] == [10] * 40
    assert parse_protocol("26+1x25").sizes == [26] + [1] * 25


def test_tcd_class_order_check_values():
    assert class_order(101, "seeded", 1000)[:10] == [37, 97, 56, 55, 33, 84, 3, 4, 72, 59]
    assert class_order(51, "seeded", 1000)[:10] == [9, 34, 8, 43, 29, 6, 3, 26, 2, 15]
    assert class_order(5, "natural", 1000) == [0, 1, 2, 3, 4]


def test_protocol_needing_more_classes_than_the_dataset_is_refused():
    with pytest.raises(StprError, match="needs 101 classes but 'synthetic' has 20"):
        build_tasks("51+10x5", 20, list(range(20)), dataset="'synthetic'")
    with pytest.raises(StprError, match="not of the form"):
        parse_protocol("five tasks")


@pytest.mark.parametrize("config, classes, sizes", [
    ("ucf101_51+10x5", 101, [51] + [10] * 5),
    ("ucf101_51+5x10", 101, [51] + [5] * 10),
    ("ucf101_51+2x25", 101, [51] + [2] * 25),
    ("hmdb51_26+5x5", 51, [26] + [5] * 5),
    ("hmdb51_26+1x25", 51, [26] + [1] * 25),
    ("kinetics400_10x40", 400, [10] * 40),
    ("kinetics400_20x20", 400, [20] * 20),
])
def test_every_paper_protocol_config(config, classes, sizes):
    cfg = load_config(config)
    assert cfg.model.name == "ViT-B-16-quickgelu" and cfg.seed == 1000 and cfg.optim.epochs_base == 60
    tasks = build_tasks(cfg.data.protocol, classes, class_order(classes, cfg.data.class_order, cfg.seed))
    assert [len(t) for t in tasks] == sizes
    flat = [c for t in tasks for c in t]
    assert len(flat) == len(set(flat)) == classes  # no class in two tasks, every class used


def test_task_files_json_and_pickle_opt_in(tmp_path):
    import json
    import pickle

    from stpr.train.data.protocol import load_task_file

    classes = ["abseiling", "air drumming", "archery", "bowling"]
    (tmp_path / "t.json").write_text(json.dumps([["archery", "abseiling"], ["air_drumming", "bowling"]]))
    assert load_task_file(str(tmp_path / "t.json"), classes, False) == [[2, 0], [1, 3]]
    with open(tmp_path / "t.pkl", "wb") as f:
        pickle.dump([{"bowling": [], "archery": []}, {"abseiling": []}], f)
    with pytest.raises(StprError, match="pickles can run code.*convert_task_file.py"):
        load_task_file(str(tmp_path / "t.pkl"), classes, False)
    assert load_task_file(str(tmp_path / "t.pkl"), classes, True) == [[3, 2], [0]]
    (tmp_path / "bad.json").write_text(json.dumps([["archery"], ["archery"]]))
    with pytest.raises(StprError, match="puts a class in two tasks"):
        load_task_file(str(tmp_path / "bad.json"), classes, False)
    (tmp_path / "x.json").write_text(json.dumps([["juggling"]]))
    with pytest.raises(StprError, match="names class 'juggling'"):
        load_task_file(str(tmp_path / "x.json"), classes, False)
