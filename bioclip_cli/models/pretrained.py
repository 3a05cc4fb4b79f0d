"""Load a pretrained transformers backbone (hub id or local folder), checking it against the preset.

The preset states every encoder's architecture explicitly; pretrained weights must have that shape.
Weights that cannot be reached (offline, not downloaded) raise MissingArtifact with the fetch command.
"""

from __future__ import annotations

from contextlib import contextmanager

from bioclip_cli.errors import ConfigError, MissingArtifact

ENCODERS_HINT = "run `bioclip download encoders`, or point {key}.weights at a local folder (null: random weights)"


@contextmanager
def quiet_transformers():
    """Silence transformers' load reports (e.g. the unused BERT pooler) for the duration."""
    from transformers.utils import logging

    level = logging.get_verbosity()
    logging.set_verbosity_error()
    try:
        yield
    finally:
        logging.set_verbosity(level)


def missing_weights(source: str, key: str, what: str, exc: BaseException | None = None) -> MissingArtifact:
    reason = f" ({str(exc).strip().splitlines()[0][:200]})" if exc is not None and str(exc).strip() else ""
    return MissingArtifact(
        source,
        f"cannot load the {what} weights {source!r}: not on disk and not downloadable here{reason}",
        ENCODERS_HINT.format(key=key),
    )


def load_hub_config(config_cls, source: str, *, key: str, what: str):
    try:
        with quiet_transformers():
            return config_cls.from_pretrained(source)
    except (OSError, ValueError) as exc:
        raise missing_weights(source, key, what, exc) from None


def check_architecture(loaded, expected: dict[str, tuple[str, object]], *, source: str, key: str) -> None:
    """`expected` maps a schema field to (transformers config attribute, preset value)."""
    for field_name, (attr, value) in expected.items():
        actual = getattr(loaded, attr, None)
        if isinstance(actual, (list, tuple)):
            actual = actual[0]
        if actual != value:
            raise ConfigError(
                f"{key}.{field_name}",
                f"{key}.{field_name} is {value} but the weights {source!r} have {attr}={actual}",
                f"set {key}.{field_name}={actual} (or choose weights of this shape)",
            )


def load_pretrained(model_cls, source: str, config, *, key: str, what: str, **kwargs):
    """`model_cls.from_pretrained(source, config=config)` in float32, errors mapped to MissingArtifact."""
    import torch

    try:
        with quiet_transformers():
            return model_cls.from_pretrained(source, config=config, dtype=torch.float32, **kwargs)
    except (OSError, ValueError) as exc:
        raise missing_weights(source, key, what, exc) from None
