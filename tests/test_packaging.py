"""The wheel carries every shipped artifact: each file under ``corea/assets/`` matches a
``[tool.setuptools.package-data]`` pattern of ``pyproject.toml`` (a non-editable install without
them silently falls back to the plain SLM and the stated confidence)."""

import tomllib
from pathlib import Path, PurePosixPath

ROOT = Path(__file__).resolve().parent.parent


def test_every_shipped_asset_is_package_data():
    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-data"]["corea"]
    assets = [p for p in (ROOT / "corea" / "assets").rglob("*") if p.is_file()]
    assert assets, "no shipped assets found"
    def shipped(rel: PurePosixPath) -> bool:  # setuptools globs: ``*`` stays in one folder
        return any(len(rel.parts) == len(PurePosixPath(pat).parts) and rel.match(pat)
                   for pat in patterns)

    rels = [PurePosixPath(p.relative_to(ROOT / "corea").as_posix()) for p in assets]
    missing = [str(r) for r in rels if not shipped(r)]
    assert not missing, f"not in pyproject package-data, so not in the wheel: {missing}"
