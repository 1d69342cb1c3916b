"""Offline pages for ``dvc plots show``: Vega, Vega-Lite and Vega-Embed inlined, nothing loaded from a CDN.

DVC's default page loads the three libraries from a CDN, so it stays blank without a network. The
``vl-convert-python`` package (a PyPI dependency) ships them: :func:`template_html` inlines its bundle into a
DVC HTML template (no ``{scripts}`` placeholder, so DVC adds no CDN tags).

    python -m lib.vega show [dvc plots show ARGS ...]   # writes the template, then runs dvc plots show with it
    python -m lib.vega template [PATH]                  # only the template (default build/dvc_plots_offline.html)
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

TEMPLATE = Path("build/dvc_plots_offline.html")  # git-ignored (/build/): generated from the installed package

PAGE = """<!DOCTYPE html>
<html>
<head>
    {refresh_tag}
    <meta charset="utf-8">
    <title>DVC Plot (offline)</title>
    <script type="text/javascript">
__BUNDLE__
    </script>
    <style>
        table {
            border-spacing: 15px;
        }
    </style>
</head>
<body>
    {plot_divs}
</body>
</html>"""


def template_html() -> str:
    """A DVC plots HTML template that defines ``vegaEmbed``, ``vega`` and ``vegaLite`` inline (vl-convert's bundle,
    the Vega-Lite v5 that DVC's plot templates use)."""
    import vl_convert

    bundle = vl_convert.javascript_bundle()
    if "</script" in bundle.lower():  # would end the inline script early
        raise ValueError("the Vega bundle holds '</script': it cannot be inlined")
    return PAGE.replace("__BUNDLE__", bundle)


def write_template(path: str | Path = TEMPLATE) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(template_html(), encoding="utf8")
    return path


def main(argv=None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["template"] and len(args) <= 2:
        print(write_template(args[1] if len(args) == 2 else TEMPLATE))
        return 0
    if args[:1] == ["show"]:
        template = write_template()
        command = [sys.executable, "-m", "dvc", "plots", "show", "--html-template", str(template.resolve()), *args[1:]]
        return subprocess.call(command)
    print(__doc__.split("\n\n", 2)[2].rstrip(), file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
