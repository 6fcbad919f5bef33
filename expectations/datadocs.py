"""Data Docs that render with no network: GX's pages load Bootstrap, jQuery, bootstrap-table and
Font Awesome from CDNs (unstyled, and the result tables stay empty, when those cannot be
reached). After a build, each page is rewritten to copies under ``static/vendor/`` of the site
(expectations/static/vendor: the npm packages and licences are listed there)."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

VENDOR = Path(__file__).parent / "static" / "vendor"
# CDN address (without its version-specific prefix) -> our copy, relative to static/vendor/.
LOCAL = {
    "bootstrap.min.css": "css/bootstrap.min.css",
    "bootstrap.min.js": "js/bootstrap.min.js",
    "jquery-3.7.1.min.js": "js/jquery.min.js",
    "popper.min.js": "js/popper.min.js",
    "bootstrap-table.min.css": "css/bootstrap-table.min.css",
    "bootstrap-table.min.js": "js/bootstrap-table.min.js",
    "bootstrap-table-filter-control.min.js": "js/bootstrap-table-filter-control.min.js",
    "bootstrap-table-filter-control.min.css": "css/bootstrap-table-filter-control.min.css",
    "bootstrap-table-filter-control.css": "css/bootstrap-table-filter-control.min.css",
    "bootstrap-datepicker.min.css": "css/bootstrap-datepicker.min.css",
    "bootstrap-datepicker.min.js": "js/bootstrap-datepicker.min.js",
    "all.min.css": "css/fontawesome-all.min.css",
}
_CDN = re.compile(r'(?P<attr>(?:src|href)=")(?P<url>https://(?:unpkg\.com|cdn\.jsdelivr\.net|cdnjs\.cloudflare\.com|'
                  r'code\.jquery\.com|maxcdn\.bootstrapcdn\.com|stackpath\.bootstrapcdn\.com)/[^"]+)"')
# Tags of CDN assets we do not copy (Vega charts, the dark theme): dropped, so a page never waits on them.
_UNCOPIED_TAG = re.compile(r'<(?:script|link)\b[^>]*(?:src|href)="https://(?:cdn\.jsdelivr\.net)/npm/'
                           r'(?:vega[^"]*|@forevolve[^"]*)"[^>]*>(?:\s*</script>)?')
_INTEGRITY = re.compile(r'\s(?:integrity|crossorigin)="[^"]*"')
# GX's logo comes from its own S3 bucket; the package ships the same image.
_LOGO = re.compile(r'https://great-expectations-web-assets\.s3[^"]*/(logo-long\.png)[^"]*"')


def localise(site: Path) -> int:
    """Copy the assets into ``site/static/vendor`` and point every page of the site at them;
    returns how many pages were rewritten."""
    site = Path(site)
    shutil.copytree(VENDOR, site / "static" / "vendor", dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns("README.md"))
    _copy_logo(site / "static" / "images")
    rewritten = 0
    for page in site.rglob("*.html"):
        html = page.read_text(encoding="utf-8")
        new = _rewrite(html, os.path.relpath(site / "static" / "vendor", page.parent))
        new = _LOGO.sub(lambda m: os.path.relpath(site / "static" / "images", page.parent) + f'/{m[1]}"', new)
        if new != html:
            page.write_text(new, encoding="utf-8")
            rewritten += 1
    return rewritten


def _rewrite(html: str, vendor: str) -> str:
    html = _UNCOPIED_TAG.sub("", html)

    def local(match: re.Match) -> str:
        name = match["url"].rsplit("/", 1)[-1].split("?")[0]
        target = LOCAL.get(name)
        return f'{match["attr"]}{vendor}/{target}"' if target else match.group(0)
    html = _CDN.sub(local, html)
    # Subresource-integrity hashes name the CDN files; ours are served from disk.
    return re.sub(r'(<(?:script|link)\b[^>]*)>', lambda m: _INTEGRITY.sub("", m.group(1)) + ">", html)


def remote_assets(html: str) -> list[str]:
    """The CDN addresses a page still loads (none after ``localise``)."""
    return [m["url"] for m in _CDN.finditer(html)]


def _copy_logo(images: Path) -> None:
    import great_expectations

    shipped = Path(great_expectations.__file__).parent / "render" / "view" / "static" / "images" / "logo-long.png"
    if shipped.is_file():
        images.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shipped, images / "logo-long.png")
