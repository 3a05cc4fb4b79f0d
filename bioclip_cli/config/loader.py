"""Load a RunConfig: preset (with `base:` inheritance) < `--config` files < `--set key=value` overrides.

Conversion is driven by the dataclass field types, so `--set train.lr=1e-4` becomes a float and
`--set eval.k=1,3,5` a list of ints. Unknown keys, wrong types and impossible values raise
ConfigError naming the key, the value and the valid choices.
"""

from __future__ import annotations

import dataclasses
import os
import stat
import types
import typing
from functools import cache
from pathlib import Path
from typing import Any, Literal, Union

import yaml

from bioclip_cli.config.schema import RunConfig
from bioclip_cli.errors import ConfigError

_NONE_WORDS = {"null", "none", "~", ""}
_TRUE_WORDS = {"true", "yes", "on", "1"}
_FALSE_WORDS = {"false", "no", "off", "0"}


# ------------------------------------------------------------------------------------------- presets


def presets_dir() -> Path:
    """The presets folder: inside the installed package, or the checkout's top-level `presets/`."""
    packaged = Path(__file__).resolve().parents[1] / "presets"
    if packaged.is_dir():
        return packaged
    checkout = Path(__file__).resolve().parents[2] / "presets"
    if checkout.is_dir():
        return checkout
    raise ConfigError("preset", "the presets folder is missing from this installation", "reinstall bioscan-clip")


def preset_names(include_hidden: bool = False) -> list[str]:
    """Preset names; names starting with `_` are building blocks for other presets."""
    names = sorted(p.stem for p in presets_dir().glob("*.yaml"))
    return [n for n in names if include_hidden or not n.startswith("_")]


MAX_CONFIG_BYTES = 1 << 20  # a configuration is a few KB; anything larger is a wrong file
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml's parser when installed (much faster)


def _config_text(path: Path, what: str) -> str:
    """The text of a configuration file; ConfigError for a missing, special, oversized or unreadable file."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise ConfigError(what, f"{what}: file {path} does not exist") from None
    except OSError as exc:
        raise ConfigError(what, f"{what}: cannot read {path} ({exc.strerror})") from None
    if stat.S_ISDIR(st.st_mode):
        raise ConfigError(what, f"{what}: {path} is a folder, not a YAML file", "give the path of a .yaml file")
    if not stat.S_ISREG(st.st_mode):
        raise ConfigError(
            what, f"{what}: {path} is not a regular file (a device, pipe or socket)", "give the path of a .yaml file"
        )
    if st.st_size > MAX_CONFIG_BYTES:
        raise ConfigError(
            what,
            f"{what}: {path} is {st.st_size:,} bytes; a configuration file may be at most {MAX_CONFIG_BYTES:,}",
            "check that this is the configuration you meant",
        )
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise ConfigError(what, f"{what}: cannot read {path} ({exc.strerror})") from None
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(what, f"{what}: {path} is over {MAX_CONFIG_BYTES:,} bytes, the limit for a configuration")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(what, f"{what}: {path} is not a text (UTF-8) file", "give the path of a .yaml file") from None


def _read_yaml(path: Path, what: str) -> dict:
    text = _config_text(path, what)
    try:
        data = yaml.load(text, Loader=_LOADER)
    except yaml.YAMLError as exc:
        raise ConfigError(what, f"{what}: {path} is not valid YAML ({exc.__class__.__name__})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(what, f"{what}: {path} must hold a mapping of sections, got {type(data).__name__}")
    return data


def _preset_path(name: str) -> Path:
    path = presets_dir() / f"{name}.yaml"
    if not path.is_file():
        raise ConfigError(
            "preset",
            f"unknown preset {name!r}; valid presets: {', '.join(preset_names())}",
            "run `bioclip presets` to list them with a description",
        )
    return path


def _resolve_file(path: Path, what: str, chain: tuple[str, ...] = ()) -> dict:
    """Read one YAML file and merge it over its `base:` presets (a name or a list of names)."""
    data = _read_yaml(path, what)
    bases = data.pop("base", None)
    if bases is None:
        return data
    if isinstance(bases, str):
        bases = [bases]
    if not isinstance(bases, list) or not all(isinstance(b, str) for b in bases):
        raise ConfigError(
            "base",
            f"{what}: base must be a preset name or a list of preset names, got {bases!r}",
            f"e.g. base: demo (valid presets: {', '.join(preset_names())})",
        )
    merged: dict = {}
    for base in bases:
        if base in chain:
            raise ConfigError("base", f"preset inheritance loops: {' -> '.join((*chain, base))}")
        merged = deep_merge(merged, _resolve_file(_preset_path(base), f"preset {base}", (*chain, base)))
    return deep_merge(merged, data)


@cache
def _preset_raw(name: str) -> dict:
    return _resolve_file(_preset_path(name), f"preset {name}", (name,))


def preset_dict(name_or_path: str) -> dict:
    """The merged (but not yet typed) dict of a preset name or a YAML path."""
    path = Path(name_or_path)
    if name_or_path.endswith((".yaml", ".yml")) or path.is_file():
        data = _resolve_file(path, f"config {path}")
        data.setdefault("name", path.stem)
        return data
    data = dict(_preset_raw(name_or_path))
    data["name"] = name_or_path
    return data


def preset_description(name: str) -> str:
    return str(_preset_raw(name).get("description", "")).strip()


# ------------------------------------------------------------------------------------------- merging


def deep_merge(base: dict, over: dict) -> dict:
    """A new dict: `over` merged into `base`, section by section (lists are replaced, not merged)."""
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def parse_set(item: str) -> dict:
    """`a.b.c=value` -> {"a": {"b": {"c": value}}}; the value is parsed as YAML, typed later."""
    if "=" not in item:
        raise ConfigError(item, f"--set {item!r} must look like section.key=value (e.g. train.batch_size=64)")
    key, raw = item.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(key, f"--set {item!r} has an empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    for part in reversed(key.split(".")):
        value = {part: value}
    return value


# ---------------------------------------------------------------------------------------- conversion


def _describe(tp) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(_describe(a) for a in typing.get_args(tp))
    if origin is list:
        return f"a list of {_describe(typing.get_args(tp)[0])}"
    if tp is type(None):
        return "null"
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false"}.get(tp, str(tp))


def _convert(value: Any, tp, key: str) -> Any:
    origin = typing.get_origin(tp)
    bad = ConfigError(key, f"{key}: {value!r} is not {_describe(tp)}")
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise bad
        return build(tp, value, key)
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if type(None) in args and (value is None or (isinstance(value, str) and value.strip().lower() in _NONE_WORDS)):
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(value, arg, key)
            except ConfigError:
                continue
        raise bad
    if origin is Literal:
        choices = typing.get_args(tp)
        if value in choices:
            return value
        if isinstance(value, str) and value.strip() in choices:
            return value.strip()
        raise ConfigError(key, f"{key}: {value!r} is not valid; choose one of {', '.join(map(str, choices))}")
    if origin is list:
        (item_tp,) = typing.get_args(tp)
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()] if value.strip() else []
        if not isinstance(value, (list, tuple)):
            raise bad
        return [_convert(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value)]
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in _TRUE_WORDS | _FALSE_WORDS:
            return value.strip().lower() in _TRUE_WORDS
        raise bad
    if tp is int:
        if isinstance(value, bool):
            raise bad
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value.strip())
            except ValueError:
                raise bad from None
        raise bad
    if tp is float:
        if isinstance(value, bool):
            raise bad
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value.strip())
            except ValueError:
                raise bad from None
        raise bad
    if tp is str:
        if isinstance(value, (dict, list)):
            raise bad
        return str(value)
    raise bad  # pragma: no cover - a field type the loader does not know


@cache
def _hints(cls) -> dict:
    return typing.get_type_hints(cls)


def build(cls, data: dict, prefix: str = ""):
    """Build dataclass `cls` from a (partial) dict; absent fields keep their defaults."""
    hints = _hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = [k for k in data if k not in names]
    if unknown:
        key = f"{prefix}.{unknown[0]}" if prefix else str(unknown[0])
        raise ConfigError(
            key,
            f"unknown configuration key {key!r}; valid keys{' in ' + prefix if prefix else ''}: {', '.join(names)}",
        )
    kwargs = {}
    for name in names:
        if name in data:
            key = f"{prefix}.{name}" if prefix else name
            kwargs[name] = _convert(data[name], hints[name], key)
    return cls(**kwargs)


def to_dict(cfg) -> dict:
    """The whole configuration as plain YAML-able data."""
    return dataclasses.asdict(cfg)


def to_yaml(cfg) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False, default_flow_style=None, width=120)


# --------------------------------------------------------------------------------------------- entry


def load_config(
    preset: str | None = None,
    files: list[str | Path] | tuple = (),
    sets: list[str] | tuple = (),
) -> RunConfig:
    """Resolve a RunConfig: defaults < preset < each `--config` file < each `--set` override."""
    data: dict = preset_dict(preset) if preset else {}
    for f in files:
        extra = _resolve_file(Path(f), f"config {f}")
        data = deep_merge(data, extra)
    for item in sets:
        data = deep_merge(data, parse_set(item))
    return build(RunConfig, data).validate()


def load_run_config(path: str | Path) -> RunConfig:
    """Reload a resolved `config.yaml` written by a run."""
    return build(RunConfig, _read_yaml(Path(path), f"config {path}")).validate()


def save_config(cfg: RunConfig, path: str | Path) -> None:
    """Write the resolved configuration atomically (temporary name, then rename)."""
    from bioclip_cli.atomic_write import write_text

    write_text(path, to_yaml(cfg))
