"""Reading a run configuration: YAML files that list only what differs from the defaults
(`config.Config`), and `key=value` overrides, each coerced to its field's type. Unknown
keys are errors that list the valid ones; a value outside its choices or range is refused
in one line before anything is written.
"""
from __future__ import annotations

import dataclasses
import math
import typing
from pathlib import Path
from typing import Any

import yaml

from stpr.runtime.contract import (
    DISTILL_MODES,
    HEAD_BALANCES,
    HEAD_CHOICES,
    HEAD_CROPS,
    HEAD_TOWERS,
    MAX_SEED,
    ROUTING_MODES,
)

from .config import Config
from .errors import StprError

CONFIG_DIR = Path(__file__).resolve().parent / "configs"


CHOICES: dict[str, tuple[str, ...]] = {
    "model.expert_init": ("previous", "random"),
    "data.class_order": ("auto", "seeded", "natural"),
    "optim.optimizer": ("sgd", "adamw"),
    "optim.schedule": ("cosine", "constant"),
    "optim.amp": ("auto", "bf16", "off"),
    "method.routing": ROUTING_MODES,
    "method.distill": DISTILL_MODES,
    "method.text_candidates": ("seen", "batch"),
    "head.mode": HEAD_CHOICES,
    "head.tower": HEAD_TOWERS,
    "head.balance": HEAD_BALANCES,
    "head.crops": HEAD_CROPS,
}


# key -> (lowest, highest, whether the bounds themselves are allowed). What a value
# outside gives is a traceback deep in the run or NaN metrics, after the run folder
# was written; checked before anything is.
_AT_LEAST_1 = (1, math.inf, True, False)  # a count or a size
_POSITIVE = (0, math.inf, False, False)
_NON_NEGATIVE = (0, math.inf, True, False)
_FRACTION = (0, 1, True, True)
RANGES: dict[str, tuple[float, float, bool, bool]] = {
    **dict.fromkeys(("model.adapter_bottleneck", "model.expert_layers", "model.expert_heads", "data.num_frames",
                     "data.clips_per_class_train", "data.clips_per_class_test", "optim.batch_size",
                     "optim.eval_batch_size", "optim.epochs_base", "optim.epochs_incremental", "head.dim",
                     "head.views"),
                    _AT_LEAST_1),
    **dict.fromkeys(("model.expert_mlp_ratio", "model.logit_scale", "optim.lr", "method.tau", "method.td_tau",
                     "method.fssd_eps", "head.tau"), _POSITIVE),
    **dict.fromkeys(("model.adapter_scale", "data.workers", "optim.weight_decay", "method.lambda_fssd",
                     "head.ridge"), _NON_NEGATIVE),
    **dict.fromkeys(("data.max_unreadable", "head.fuse_weight"), _FRACTION),
    "model.adapter_dropout": (0, 1, True, False),
    "data.split": (1, 3, True, True),
    "data.holdout": (0, 1, False, False),
    "optim.momentum": (0, 1, True, False),
}


def _range_text(lo: float, hi: float, lo_ok: bool, hi_ok: bool) -> str:
    low = f"{'>=' if lo_ok else '>'} {lo:g}"
    return low if math.isinf(hi) else f"{low} and {'<=' if hi_ok else '<'} {hi:g}"


def check_ranges(cfg: Config) -> None:
    """Every numeric setting inside its valid range (finite), else one StprError listing
    each offending key, its value and the range."""
    problems = []
    for key, (lo, hi, lo_ok, hi_ok) in RANGES.items():
        section, leaf = key.split(".")
        v = getattr(getattr(cfg, section), leaf)
        inside = (v > lo or (lo_ok and v == lo)) and (v < hi or (hi_ok and v == hi))
        if not math.isfinite(v) or not inside:
            problems.append(f"{key}={v!r} (must be {_range_text(lo, hi, lo_ok, hi_ok)})")
    if isinstance(cfg.seed, bool) or not isinstance(cfg.seed, int) or not 0 <= cfg.seed <= MAX_SEED:
        problems.append(f"seed={cfg.seed!r} (must be an integer from 0 to {MAX_SEED})")
    if not cfg.model.templates or any("{}" not in t for t in cfg.model.templates):
        problems.append(f"model.templates={cfg.model.templates!r} (each prompt needs a {{}} for the class name)")
    if problems:
        raise StprError("config values out of range: " + "; ".join(problems))


def valid_keys(cfg: Config | None = None) -> list[str]:
    """Every settable dotted key, e.g. 'optim.lr'."""
    cfg = cfg or Config()
    keys = []
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            keys += [f"{f.name}.{g.name}" for g in dataclasses.fields(value)]
        else:
            keys.append(f.name)
    return keys


def set_value(cfg: Config, key: str, value: Any) -> None:
    """Set dotted `key` to `value`, coerced to the field's type; errors name the fix."""
    if key not in valid_keys(cfg):
        raise StprError(f"unknown config key {key!r}; valid keys: {', '.join(valid_keys(cfg))}")
    *parents, leaf = key.split(".")
    target = cfg
    for p in parents:
        target = getattr(target, p)
    ftype = {f.name: f.type for f in dataclasses.fields(target)}[leaf]
    hints = typing.get_type_hints(type(target))
    coerced = _coerce(key, value, hints.get(leaf, ftype))
    if key in CHOICES and coerced not in CHOICES[key]:
        raise StprError(f"{key}={coerced!r} is not valid; choose one of: {', '.join(CHOICES[key])}")
    setattr(target, leaf, coerced)


def _coerce(key: str, value: Any, tp: Any) -> Any:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(key, value, inner[0])
    if origin is list:
        items = value if isinstance(value, list) else [value]
        return [_coerce(key, v, args[0]) for v in items]
    try:
        if tp is bool:
            if isinstance(value, bool):
                return value
            raise ValueError
        if tp is int and isinstance(value, float) and not value.is_integer():
            raise ValueError
        if tp in (int, float) and isinstance(value, bool):
            raise ValueError
        return tp(value)
    except (TypeError, ValueError):
        raise StprError(f"{key}={value!r} is not a valid {getattr(tp, '__name__', tp)}") from None


def apply_overrides(cfg: Config, overrides: dict[str, Any]) -> Config:
    for key, value in overrides.items():
        set_value(cfg, key, value)
    return cfg


def parse_set(items: list[str]) -> dict[str, Any]:
    """`['optim.lr=0.05', 'model.templates=[a {}, b {}]']` -> typed values via YAML."""
    out = {}
    for item in items:
        if "=" not in item:
            raise StprError(f"--set expects key=value, got {item!r} (e.g. --set optim.lr=0.05)")
        key, raw = item.split("=", 1)
        try:
            out[key.strip()] = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:  # not YAML (e.g. a prompt with braces): keep the text
            out[key.strip()] = raw
    return out


def flatten_keys(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            flat.update(flatten_keys(v, key + "."))
        else:
            flat[key] = v
    return flat


def resolve_config_path(name_or_path: str) -> Path:
    """A config name under train/configs/ ('demo', 'paper') or a path to a YAML file."""
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml"):
        if not p.is_file():
            raise StprError(f"config file {name_or_path!r} does not exist")
        return p
    builtin = CONFIG_DIR / f"{name_or_path}.yaml"
    if not builtin.is_file():
        names = sorted(f.stem for f in CONFIG_DIR.glob("*.yaml"))
        raise StprError(f"unknown config {name_or_path!r}; built-in: {', '.join(names)}, or pass a .yaml path")
    return builtin


def load_config(name_or_path: str | None = None, overrides: dict[str, Any] | None = None) -> Config:
    """Defaults, then the YAML file (if any), then `overrides`."""
    cfg = Config()
    if name_or_path:
        path = resolve_config_path(name_or_path)
        data = yaml.safe_load(path.read_text()) or {}
        if not isinstance(data, dict):
            raise StprError(f"config {str(path)!r} must be a mapping of sections to keys")
        apply_overrides(cfg, flatten_keys(data))
    apply_overrides(cfg, overrides or {})
    check_ranges(cfg)
    return cfg
