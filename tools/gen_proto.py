"""Regenerate ``generated/`` from ``proto/`` (``make proto``); ``--check`` fails when it is stale.

grpcio-tools writes the grpc.aio/protobuf code (``*_pb2.py``, ``*_pb2.pyi``, ``*_pb2_grpc.py``)
for every ``.proto`` under ``proto/``; betterproto writes the dataclass code of the demo's
``shop`` package into ``generated/shop_betterproto`` for the grpclib-based demo service. Every
package directory gets an ``__init__.py`` so setuptools finds it.
"""

from __future__ import annotations

import argparse
import filecmp
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO = ROOT / "proto"
GENERATED = ROOT / "generated"
BETTERPROTO_PACKAGES = ("shop",)


def generate(out: Path) -> None:
    """Write all generated code under ``out``."""
    import grpc_tools

    protos = sorted(str(p.relative_to(PROTO)) for p in PROTO.rglob("*.proto"))
    if not protos:
        return
    well_known = str(Path(grpc_tools.__file__).parent / "_proto")
    base = [sys.executable, "-m", "grpc_tools.protoc", f"-I{PROTO}", f"-I{well_known}"]
    subprocess.run(
        [*base, f"--python_out={out}", f"--pyi_out={out}", f"--grpc_python_out={out}", *protos],
        check=True,
        cwd=PROTO,
    )
    bp_protos = [p for p in protos if p.split("/", 1)[0] in BETTERPROTO_PACKAGES]
    if bp_protos:
        bp_out = out / "shop_betterproto"
        bp_out.mkdir(parents=True, exist_ok=True)
        plugin = Path(sys.executable).parent / "protoc-gen-python_betterproto"
        subprocess.run(
            [
                *base,
                f"--plugin=protoc-gen-python_betterproto={plugin}",
                f"--python_betterproto_out={bp_out}",
                *bp_protos,
            ],
            check=True,
            cwd=PROTO,
        )
    for directory, _dirs, files in os.walk(out):
        if any(f.endswith(".py") for f in files) or directory != str(out):
            init = Path(directory) / "__init__.py"
            if directory != str(out) and not init.exists():
                init.write_text("")


def same_tree(a: Path, b: Path) -> list[str]:
    """Return the relative paths that differ between two trees (ignoring caches)."""

    def files(root: Path) -> set[str]:
        return {
            str(p.relative_to(root))
            for p in root.rglob("*")
            if p.is_file() and "__pycache__" not in p.parts
        }

    fa, fb = files(a), files(b)
    diff = sorted(fa ^ fb)
    diff += sorted(f for f in fa & fb if not filecmp.cmp(a / f, b / f, shallow=False))
    return diff


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if generated/ is stale")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "generated"
        out.mkdir()
        generate(out)
        if args.check:
            stale = same_tree(out, GENERATED) if GENERATED.exists() else ["generated/"]
            if stale:
                print("generated/ is stale; run `make proto`. Differs:", *stale, sep="\n  ")
                return 1
            return 0
        if GENERATED.exists():
            shutil.rmtree(GENERATED)
        shutil.copytree(out, GENERATED)
    print(f"regenerated {GENERATED.relative_to(ROOT)}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
