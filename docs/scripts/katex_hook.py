"""mkdocs hook: the site carries its own KaTeX, fetched from the npm registry when the site is built.

``pymdownx.arithmatex`` (generic mode) marks formulas up as ``\\(...\\)`` and ``\\[...\\]``; KaTeX's
auto-render typesets them in the reader's browser from ``javascripts/katex/`` of the built site, so no
page loads anything from another host. The package is downloaded once with ``npm pack`` (npm's own
integrity check) into ``.cache/`` and copied into every build; ``mkdocs build`` and ``mkdocs serve``
need ``npm`` (Debian: ``apt-get install npm``) on the first build only.
"""

from __future__ import annotations

import shutil
import subprocess
import tarfile
from pathlib import Path
from typing import Any

from mkdocs.exceptions import PluginError

KATEX_VERSION = "0.19.1"
CACHE = Path(__file__).resolve().parents[2] / ".cache" / f"katex-{KATEX_VERSION}"
# What the pages load (see extra_javascript and extra_css in mkdocs.yml) and the fonts the CSS names.
FILES = ("katex.min.js", "katex.min.css", "contrib/auto-render.min.js", "fonts")


def katex_dist() -> Path:
    """KaTeX's ``dist`` folder, downloaded on first use."""
    dist = CACHE / "package" / "dist"
    if (dist / "katex.min.js").is_file():
        return dist
    npm = shutil.which("npm")
    if npm is None:
        raise PluginError(
            f"docs/scripts/katex_hook.py: building the docs needs npm once, to fetch katex@{KATEX_VERSION} "
            "from the npm registry (Debian: apt-get install npm)"
        )
    CACHE.mkdir(parents=True, exist_ok=True)
    packed = subprocess.run(
        [npm, "pack", f"katex@{KATEX_VERSION}", "--pack-destination", str(CACHE)],
        check=True,
        capture_output=True,
        text=True,
    )
    tarball = CACHE / packed.stdout.strip().splitlines()[-1]
    with tarfile.open(tarball) as archive:
        archive.extractall(CACHE, filter="data")
    tarball.unlink()
    return dist


def on_post_build(config: Any, **kwargs: Any) -> None:
    dist = katex_dist()
    target = Path(config["site_dir"]) / "javascripts" / "katex"
    for name in FILES:
        source, destination = dist / name, target / name
        destination.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, destination, dirs_exist_ok=True)
        else:
            shutil.copy2(source, destination)
