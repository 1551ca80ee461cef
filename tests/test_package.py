"""What a project depending on PhotoSentry gets: the licence, type hints, a README whose
links stay inside the repository, and a design document that names every module."""

from __future__ import annotations

import hashlib
import re
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "photosentry"

#: sha256 of the Apache License 2.0 exactly as apache.org publishes it (LICENSE-2.0.txt;
#: Debian ships the same bytes as /usr/share/common-licenses/Apache-2.0).
APACHE_2_0_SHA256 = "cfc7749b96f63bd31c3c42b5c471bf756814053e847c10f3eb003417bc523d30"


def test_license_is_the_full_apache_2_0_text() -> None:
    text = (REPO / "LICENSE").read_bytes()
    assert hashlib.sha256(text).hexdigest() == APACHE_2_0_SHA256
    assert tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["license"] == "Apache-2.0"


def test_type_hints_ship_with_the_package() -> None:
    assert (PACKAGE / "py.typed").is_file()
    data = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    assert "py.typed" in data["photosentry"]


def test_readme_links_only_files_in_the_repository() -> None:
    readme = (REPO / "README.md").read_text()
    links = re.findall(r"\]\(([^)]+)\)", readme)
    assert "docs/design.md" in links and "LICENSE" in links and "CHANGELOG.md" in links
    for link in links:
        assert "://" not in link and not link.startswith(("/", "..")), link
        assert (REPO / link.split("#")[0]).exists(), link


def test_design_document_names_every_module_of_the_core_and_the_worker() -> None:
    design = (REPO / "docs" / "design.md").read_text()
    for package in ("hashes", "models", "worker"):
        for path in sorted((PACKAGE / package).iterdir()):
            if path.name.startswith("__") or path.suffix not in (".py", "") or path.name == "manifests":
                continue
            assert re.search(rf"\b{re.escape(path.stem)}\b", design), f"docs/design.md does not name {package}/{path.name}"
    for module in ("decode", "defaults", "errors", "config", "enqueue", "rescan", "review", "cli"):
        assert re.search(rf"\b{module}\b", design), module
