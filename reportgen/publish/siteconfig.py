"""What a report needs of the site that shows it: the Markdown extensions of its pages.

A report's pages are Markdown with a few extensions (admonitions, attribute lists, tabs...).
A site that lacks one still builds, even with ``mkdocs build --strict``, but shows raw
``!!! warning`` text and breaks the in-page links, so ``reportgen init`` writes the list
below into the mkdocs.yml it scaffolds, and ``reportgen build`` and ``reportgen check`` warn
when the site's mkdocs.yml lacks one (``site_warnings``). docs/publishing.md shows the
same list (a test keeps the two equal).
"""

from __future__ import annotations

import json
import os
from functools import lru_cache
from pathlib import Path

# Every Markdown extension the report pages use, with the options they need: the one list.
MARKDOWN_EXTENSIONS: dict[str, dict] = {
    "admonition": {},  # !!! note: findings and notes
    "attr_list": {},  # { #anchor } on headings, { loading=lazy width=N } on pictures
    "md_in_html": {},  # <div class="grid cards" markdown>: picture grids and compact tables
    "tables": {},
    "toc": {},  # heading anchors, the targets of in-page links
    "pymdownx.details": {},  # ??? info: collapsible lists
    "pymdownx.tabbed": {"alternate_style": True},  # === "tab": the views of one layer
}

# MkDocs, ProperDocs and Zensical turn these on whatever the configuration says.
ALWAYS_ON = frozenset({"toc", "tables"})

# The file names MkDocs and ProperDocs look for, in their order.
CONFIG_NAMES = ("mkdocs.yml", "mkdocs.yaml", "properdocs.yml", "properdocs.yaml")


def markdown_extensions_yaml(extra: dict[str, dict] | None = None) -> str:
    """The ``markdown_extensions:`` block of a mkdocs.yml with every extension the pages use;
    ``extra``: options to add (name -> options), e.g. ``{"toc": {"permalink": True}}``."""
    lines = ["markdown_extensions:"]
    for name, needed in MARKDOWN_EXTENSIONS.items():
        options = {**needed, **(extra or {}).get(name, {})}
        lines.append(f"  - {name}" + (":" if options else ""))
        lines += [f"      {key}: {json.dumps(value)}" for key, value in options.items()]
    return "\n".join(lines) + "\n"


@lru_cache(maxsize=1)
def _yaml_loader():
    """A YAML loader for mkdocs.yml: safe, and tolerant of the tags MkDocs reads (``!ENV``,
    ``!relative``, ``!!python/name:...``): ``!ENV`` reads the environment as MkDocs does;
    any other tag gives the plain value under it."""
    import yaml

    class Loader(yaml.SafeLoader):
        pass

    def plain(loader, _suffix, node):
        if isinstance(node, yaml.ScalarNode):
            return loader.construct_scalar(node)
        if isinstance(node, yaml.SequenceNode):
            return loader.construct_sequence(node, deep=True)
        return loader.construct_mapping(node, deep=True)

    def env(loader, node):  # !ENV NAME or !ENV [NAME, OTHER, default]
        names = ([loader.construct_scalar(node)] if isinstance(node, yaml.ScalarNode)
                 else [str(v) for v in loader.construct_sequence(node, deep=True)])
        default = names.pop() if len(names) > 1 else None
        return next((os.environ[n] for n in names if n in os.environ), default)

    Loader.add_constructor("!ENV", env)
    Loader.add_multi_constructor("!", plain)
    Loader.add_multi_constructor("tag:yaml.org,2002:python/", plain)
    return Loader


def load_config(path: Path, _depth: int = 0) -> dict:
    """The settings of a mkdocs.yml, with those of the file it INHERITs (merged as MkDocs
    merges them: mappings key by key, anything else replaced). Raises OSError or
    yaml.YAMLError when it cannot be read."""
    import yaml

    with open(path, encoding="utf-8") as fh:
        config = yaml.load(fh, Loader=_yaml_loader()) or {}
    if not isinstance(config, dict):
        raise yaml.YAMLError(f"{path} is not a mapping")
    parent = config.pop("INHERIT", None)
    if isinstance(parent, str) and _depth < 10:
        config = _merge(load_config(Path(path).parent / parent, _depth + 1), config)
    return config


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for key, value in over.items():
        out[key] = _merge(out[key], value) if isinstance(out.get(key), dict) and isinstance(value, dict) else value
    return out


def find_config(docs_dir: Path) -> tuple[Path, dict] | None:
    """The configuration of the site whose docs_dir is ``docs_dir``, and its settings: the
    first mkdocs.yml (or mkdocs.yaml, properdocs.yml) in the folder that holds ``docs_dir``
    or one above it whose ``docs_dir`` is that folder. The default ``docs`` finds the
    mkdocs.yml of the current directory, the one `mkdocs build` and `reportgen serve` use.
    A file that cannot be read is passed over (MkDocs says what is wrong with it)."""
    import yaml

    docs = Path(os.path.abspath(docs_dir))
    for folder in docs.parents:
        for name in CONFIG_NAMES:
            path = folder / name
            if not path.is_file():
                continue
            try:
                config = load_config(path)
            except (OSError, ValueError, yaml.YAMLError):
                continue
            if Path(os.path.abspath(folder / str(config.get("docs_dir") or "docs"))) == docs:
                return path, config
    return None


def configured_extensions(config: dict) -> dict[str, dict]:
    """The Markdown extensions a configuration turns on: name -> options."""
    value = config.get("markdown_extensions") or []
    items = list(value.items()) if isinstance(value, dict) else []
    if isinstance(value, list):
        for item in value:
            if isinstance(item, str):
                items.append((item, {}))
            elif isinstance(item, dict) and len(item) == 1:
                items.extend(item.items())
    return {str(name).removeprefix("markdown.extensions."): opts if isinstance(opts, dict) else {}
            for name, opts in items}


def missing_extensions(config: dict) -> list[str]:
    """The extensions (with the options they need) that the pages use and ``config`` lacks."""
    have = configured_extensions(config)
    missing = []
    for name, needed in MARKDOWN_EXTENSIONS.items():
        if name in ALWAYS_ON:
            continue
        if name not in have:
            missing.append(name)
        elif any(have[name].get(k) != v for k, v in needed.items()):
            missing.append(f"{name} with " + ", ".join(f"{k}: {json.dumps(v)}" for k, v in needed.items()))
    return missing


def site_warnings(docs_dir: Path) -> list[str]:
    """One warning when the mkdocs.yml of the site in ``docs_dir`` (``find_config``) lacks a
    Markdown extension the report pages use; none when it has them all or there is no such
    file (a site built some other way: docs/publishing.md lists what it needs)."""
    found = find_config(docs_dir)
    if found is None:
        return []
    path, config = found
    missing = missing_extensions(config)
    if not missing:
        return []
    shown = os.path.relpath(path)
    shown = str(path) if shown.startswith("..") else shown
    return [f"{shown} lacks Markdown extensions that report pages use: {', '.join(missing)}; add them under "
            "markdown_extensions (reportgen's Publishing page lists them), or the site shows findings as raw "
            "'!!!' text and links within pages break"]
