"""``docs/config.md`` generated from the config dataclasses: every key, its type, default and meaning.

The meaning is the field's one-line comment in :mod:`pivad.config`, read from the source, so the page
cannot drift from the code (``tests/test_config_docs.py`` regenerates it and compares).
``python -m pivad.config_docs > docs/config.md`` rewrites it.
"""

from __future__ import annotations

import dataclasses
import inspect
import re

from pivad import config as config_module

_FIELD = re.compile(r"^\s+(\w+):[^#]*?(?:#\s*(.*))?$")


def field_comments(cls: type) -> dict[str, str]:
    """``{field: comment}`` of a dataclass, from the ``# ...`` at the end of each field's line."""
    out = {}
    for line in inspect.getsource(cls).splitlines()[1:]:
        m = _FIELD.match(line)
        if m and m.group(2):
            out[m.group(1)] = m.group(2).strip()
    return out


def _default(f: dataclasses.Field) -> str:
    if f.default is not dataclasses.MISSING:
        value = f.default
    elif f.default_factory is not dataclasses.MISSING:
        value = f.default_factory()
    else:  # pragma: no cover - every section field has a default (a modality's name and dim have none)
        return ""
    if isinstance(value, list) and value and dataclasses.is_dataclass(value[0]):
        return ", ".join(f"{v.name}:{v.dim}" for v in value)
    return repr(value) if isinstance(value, str) else str(value)


def _allowed(f: dataclasses.Field) -> str:
    """The values a field allows, from its :class:`~pivad.config.Check` (or its type)."""
    check = f.metadata.get("check")
    if check is not None:
        return check.allowed
    return {"bool": "true | false", "list[str]": "a list of names"}.get(str(f.type), "")


def render() -> str:
    """The whole markdown page."""
    lines = [
        "# Configuration keys",
        "",
        "Generated from the dataclasses in `src/pivad/config.py` by `python -m pivad.config_docs` (a test",
        "checks it is current). Set keys in a YAML file (`-c FILE`, section by section) or on the command",
        "line (`--section.key value`); `pivad config show [-c FILE] [overrides]` prints the resolved config.",
        "Every verb checks the values against the *allowed* column (numbers finite) when it reads a config (a",
        "file, overrides or a checkpoint's config) and refuses one out of range in one line naming the key.",
        f"The caps on widths ({config_module.MAX_WIDTH}), `data.num_segments` ({config_module.MAX_SEGMENTS}) and "
        f"batch sizes ({config_module.MAX_BATCH}) are far",
        "above any setting in use; they refuse a typo before it becomes a terabyte allocation.",
        f"A config file is a UTF-8 YAML file of at most {config_module.MAX_CONFIG_BYTES >> 20} MiB (a FIFO, a device or a "
        "folder is refused",
        "without being read); `1e-4` is a number in a file as on the command line, quote a string that",
        "looks like one (`'1e-4'`).",
        "",
    ]
    mod_comments = field_comments(config_module.ModalityConfig)
    for section in dataclasses.fields(config_module.Config):
        cls = section.default_factory  # type: ignore[misc]
        comments = field_comments(cls)
        lines += [f"## `{section.name}`", "", "| key | default | allowed | meaning |", "|---|---|---|---|"]
        for f in dataclasses.fields(cls):
            meaning = comments.get(f.name, "")
            if f.name == "modalities":
                meaning = ("modality features, a list of `{name, dim}` (name: " + mod_comments.get("name", "")
                           + "; dim: " + mod_comments.get("dim", "") + ")")
            meaning = meaning.replace("|", "\\|")
            default = _default(f).replace("|", "\\|")
            allowed = _allowed(f).replace("|", "\\|")
            if f.name == "modalities":
                allowed = "names unique, dims in " + _allowed(dataclasses.fields(config_module.ModalityConfig)[1])
            lines.append(f"| `{section.name}.{f.name}` | `{default}` | {allowed} | {meaning} |")
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":  # pragma: no cover
    print(render(), end="")
