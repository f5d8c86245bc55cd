"""mypy over the package as it installs: ``runstream.api``, ``runstream.db``, ...

The repository keeps those folders at its root and setuptools' package-dir maps
them into ``runstream`` when it builds; mypy cannot follow that mapping (nor the
editable install's import hook). So this lays the package out as installed, as
links under build/typecheck, and runs mypy there with the project's settings.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TREE = ROOT / "build" / "typecheck"


def lay_out() -> None:
    package_dir: dict[str, str] = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-dir"
    ]
    shutil.rmtree(TREE, ignore_errors=True)
    for package, folder in sorted(package_dir.items()):
        target = TREE.joinpath(*package.split("."))
        if target.exists():
            continue  # inside a folder already linked whole
        if package == "runstream":
            # Its own folder, beside which the mapped subpackages are linked.
            target.mkdir(parents=True)
            for path in (ROOT / folder).iterdir():
                if path.name != "__pycache__":
                    (target / path.name).symlink_to(path)
        else:
            target.symlink_to(ROOT / folder, target_is_directory=True)


def main() -> int:
    lay_out()
    mypy = [sys.executable, "-m", "mypy", "--config-file", str(ROOT / "pyproject.toml"), "-p", "runstream"]
    return subprocess.run(mypy, cwd=TREE, check=False).returncode


if __name__ == "__main__":
    sys.exit(main())
