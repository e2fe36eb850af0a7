"""Installing the project (a wheel built by pip) claims only the `colorization` import name."""

from __future__ import annotations

from tests.unit.test_structure import PACKAGE


def test_installing_the_project_claims_only_the_colorization_import_name(tmp_path):
    """flows/ and tasks/ are the checkout's folders: a wheel of the project must not install them
    as top-level `flows` and `tasks` packages in site-packages."""
    import shutil
    import subprocess
    import sys
    import zipfile

    source = tmp_path / "source"  # a copy: setuptools writes build/ and egg-info into the tree it builds
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info")
    for folder in ("colorization", "flows", "tasks"):
        shutil.copytree(PACKAGE.parent / folder, source / folder, ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(PACKAGE.parent / name, source / name)
    wheels = tmp_path / "wheels"
    pip = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(wheels)]
    subprocess.run([*pip, str(source)], check=True, capture_output=True)
    (wheel,) = wheels.glob("*.whl")
    names = {name.split("/")[0] for name in zipfile.ZipFile(wheel).namelist()}
    assert {n for n in names if not n.endswith(".dist-info")} == {"colorization"}, names
