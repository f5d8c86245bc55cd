"""DeltaKit's own client source, fetched unmodified into ``vendor/packages/`` at one pinned commit.

@deltakit/react and @deltakit/core are not published on npm, and the project
commits no third-party source, so the files the test runs are downloaded from
GitHub (git-ignored). ``SOURCE.json`` names the repository, the commit and each
file's SHA-256:

    python -m tests.deltakit.vendored fetch    # (needs GitHub) download them and verify
    python -m tests.deltakit.vendored verify   # the local copy is that commit's, byte for byte

To move to a newer DeltaKit, change ``commit`` in SOURCE.json and run
``fetch --update``: it downloads the files at that commit and records their new hashes.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import urllib.request
from pathlib import Path

VENDOR = Path(__file__).with_name("vendor")
SOURCE = VENDOR / "SOURCE.json"


class VendorMismatch(Exception):
    """A vendored file is missing or differs from the pinned commit's."""


def fetched() -> bool:
    """Whether any of the pinned files is on this machine (``verify`` says whether all are right)."""
    return any((VENDOR / path).is_file() for path in source()["files"])


def source() -> dict:
    return json.loads(SOURCE.read_text())


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def verify() -> list[str]:
    """The vendored paths, after checking every one against its recorded hash."""
    pinned = source()
    wrong = []
    for path, digest in pinned["files"].items():
        local = VENDOR / path
        if not local.is_file() or sha256(local.read_bytes()) != digest:
            wrong.append(path)
    if wrong:
        raise VendorMismatch(
            f"not the files of {pinned['repository']}@{pinned['commit']}: {', '.join(wrong)} "
            "(run `python -m tests.deltakit.vendored fetch`)"
        )
    return list(pinned["files"])


RAW_GITHUB = "https://raw.githubusercontent.com"


def _download(base_url: str, repository: str, commit: str, path: str) -> bytes:
    url = f"{base_url}/{repository}/{commit}/{path}"
    with urllib.request.urlopen(url, timeout=30) as response:
        return response.read()


def fetch(update: bool = False, base_url: str = RAW_GITHUB) -> None:
    """Download every listed file at the pinned commit; refuse any whose hash differs
    (with ``update``, record the new hashes instead: for moving to another commit)."""
    pinned = source()
    downloaded = {path: _download(base_url, pinned["repository"], pinned["commit"], path) for path in pinned["files"]}
    changed = [path for path, data in downloaded.items() if sha256(data) != pinned["files"][path]]
    if changed and not update:
        raise VendorMismatch(f"{pinned['repository']}@{pinned['commit']} serves other bytes for: {', '.join(changed)}")
    for path, data in downloaded.items():
        (VENDOR / path).parent.mkdir(parents=True, exist_ok=True)
        (VENDOR / path).write_bytes(data)
    pinned["files"] = {path: sha256(data) for path, data in downloaded.items()}
    SOURCE.write_text(json.dumps(pinned, indent=2) + "\n")
    verify()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("verify", help="check the vendored files against SOURCE.json")
    fetch_command = commands.add_parser("fetch", help="download the files at the pinned commit (needs GitHub)")
    fetch_command.add_argument("--update", action="store_true", help="record new hashes (after changing the commit)")
    fetch_command.add_argument("--base-url", default=RAW_GITHUB, help="where <repository>/<commit>/<path> is served")
    args = parser.parse_args()
    try:
        if args.command == "fetch":
            fetch(update=args.update, base_url=args.base_url)
        paths = verify()
    except OSError as exc:
        print(f"cannot download from {args.base_url}: {exc}", file=sys.stderr)
        return 1
    except VendorMismatch as exc:
        print(exc, file=sys.stderr)
        return 1
    pinned = source()
    print(f"{len(paths)} files of {pinned['repository']}@{pinned['commit']}, unmodified")
    return 0


if __name__ == "__main__":
    sys.exit(main())
