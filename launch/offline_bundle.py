"""Build an offline install bundle for a GPU node without network (and with its own torch).

On a machine with PyPI:
    python launch/offline_bundle.py bundle/ --python-version 3.12            # the node seen so far
    python launch/offline_bundle.py bundle/ --node-freeze node-freeze.txt    # `pip freeze` of the node
On the node:
    pip install --no-index --find-links bundle/ cft

The folder gets the project's own wheel (with its Hydra config and benchmark files) and wheels of
every runtime dependency the node lacks, for the node's Python and platform. Packages the node
already has (torch, transformers, ... : `--node-freeze`, else NODE_HAS below) are not carried
and not descended into, so pip never has to resolve torch, and the node's own torch/transformers
stay untouched. We walk the dependency graph ourselves (pip download --no-deps, a level at a
time) because `pip download` alone would resolve accelerate -> torch -> the CUDA wheels (GBs).
"""
from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

try:
    from packaging.markers import default_environment
    from packaging.requirements import Requirement
    from packaging.specifiers import SpecifierSet
    from packaging.utils import canonicalize_name
    from packaging.version import Version
except ImportError:  # a bare interpreter: pip vendors packaging
    from pip._vendor.packaging.markers import default_environment
    from pip._vendor.packaging.requirements import Requirement
    from pip._vendor.packaging.specifiers import SpecifierSet
    from pip._vendor.packaging.utils import canonicalize_name
    from pip._vendor.packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]

# The GPU node as seen (issue #14): one H200, Python 3.12, these preinstalled (with their own
# dependencies, which are therefore present too).
NODE_HAS = ["torch", "transformers", "accelerate", "triton", "numpy", "pandas", "matplotlib", "sympy",
            "safetensors", "tokenizers", "rich", "tqdm", "pyyaml", "pytest", "huggingface-hub",
            "packaging", "filelock", "requests", "regex", "jinja2", "networkx", "fsspec",
            "typing-extensions", "mpmath", "pillow", "python-dateutil", "pytz", "tzdata", "six",
            "pygments", "markdown-it-py", "mdurl", "psutil"]


def pip(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "pip", *args], check=True)


def wheel_requires(whl: Path) -> list[str]:
    """Requires-Dist lines of a wheel's METADATA."""
    with zipfile.ZipFile(whl) as z:
        meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        text = z.read(meta).decode()
    return [line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("Requires-Dist:")]


def wheel_name(whl: Path) -> str:
    return canonicalize_name(whl.name.split("-")[0])


def target_env(python_version: str) -> dict:
    env = default_environment()
    env.update(python_version=python_version, python_full_version=f"{python_version}.0",
               sys_platform="linux", platform_system="Linux", platform_machine="x86_64", os_name="posix",
               implementation_name="cpython", platform_python_implementation="CPython")
    return env


def needed(req: str, env: dict, extras: tuple[str, ...] = ("",)) -> Requirement | None:
    r = Requirement(req)
    if r.marker is None or any(r.marker.evaluate({**env, "extra": e}) for e in extras):
        return r
    return None


def node_packages(freeze: Path | None) -> set[str]:
    if freeze is None:
        return {canonicalize_name(n) for n in NODE_HAS}
    names = set()
    for line in freeze.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            names.add(canonicalize_name(re.split(r"[=<>!~ @\[;]", line, maxsplit=1)[0]))
    return names


def build(out: Path, python_version: str, platforms: list[str], node_has: set[str]) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("*.whl"):
        old.unlink()
    # The project's wheel; with setuptools at hand no build environment is downloaded. A stale
    # build/ would put files of earlier builds into the wheel.
    shutil.rmtree(ROOT / "build", ignore_errors=True)
    pip("wheel", "-q", "--no-deps", *(["--no-build-isolation"] if _has_setuptools() else []), str(ROOT),
        "-w", str(out))
    env = target_env(python_version)
    abi = "cp" + python_version.replace(".", "")
    platform_args = [a for p in platforms for a in ("--platform", p)]
    download = ["download", "-q", "--no-deps", "--only-binary=:all:", "--dest", str(out),
                "--python-version", python_version, "--implementation", "cp", "--abi", abi, "--abi", "none",
                *platform_args]
    have = {"cft"}
    queue = [r for r in (needed(q, env) for q in wheel_requires(next(out.glob("cft-*.whl")))) if r]
    while queue:
        level: dict[str, list[str]] = {}
        for r in queue:
            name = canonicalize_name(r.name)
            if name in have or name in node_has:
                continue
            level.setdefault(name, []).append(f"{r.name}{r.specifier}")
        if not level:
            break
        before = set(out.glob("*.whl"))
        try:
            pip(*download, *(spec for specs in level.values() for spec in specs))
        except subprocess.CalledProcessError:  # one of them has no wheel: find which, one at a time
            for specs in level.values():
                try:
                    pip(*download, *specs)
                except subprocess.CalledProcessError:
                    print(f"[bundle] {' '.join(specs)}: no wheel on the index (the ERROR above); building it from its sdist")
                    # An sdist only (antlr4-python3-runtime 4.9.3): build its wheel here, which is
                    # valid on the node only if it is pure Python (checked below).
                    pip("wheel", "-q", "--no-deps", "-w", str(out), *specs)
        for whl in set(out.glob("*.whl")) - before:
            if "-none-" not in whl.name and f"-{abi}-" not in whl.name and "-abi3-" not in whl.name:
                raise SystemExit(f"{whl.name}: built here for this machine's Python, not for the node's "
                                 f"({python_version}); it has no wheel for the node on the index")
        have |= set(level)
        queue = []
        for whl in set(out.glob("*.whl")) - before:
            extras = tuple({"", *next((Requirement(s).extras for specs in level.values() for s in specs
                                       if canonicalize_name(Requirement(s).name) == wheel_name(whl)), set())})
            queue += [r for r in (needed(q, env, extras) for q in wheel_requires(whl)) if r]
    reconcile(out, env, download)
    return sorted(out.glob("*.whl"))


def reconcile(out: Path, env: dict, download: list[str], rounds: int = 3) -> None:
    """A package first met through a loose requirement (cft: omegaconf>=2.3) may break a stricter
    one met later (hydra-core: omegaconf<2.4): re-download it under all its requirements joined."""
    for _ in range(rounds):
        wheels = {wheel_name(w): w for w in out.glob("*.whl")}
        specs: dict[str, SpecifierSet] = {}
        for whl in wheels.values():
            for r in (needed(q, env) for q in wheel_requires(whl)):
                if r is not None and canonicalize_name(r.name) in wheels:
                    name = canonicalize_name(r.name)
                    specs[name] = specs.get(name, SpecifierSet()) & r.specifier
        broken = {n: sp for n, sp in specs.items()
                  if not sp.contains(Version(wheels[n].name.split("-")[1]), prereleases=True)}
        if not broken:
            return
        for name, spec in broken.items():
            wheels[name].unlink()
            pip(*download, f"{name}{spec}")
    raise SystemExit(f"conflicting requirements could not be reconciled: {broken}")


def _has_setuptools() -> bool:
    try:
        import setuptools  # noqa: F401
        return True
    except ImportError:
        return False


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out", type=Path, help="the bundle folder (its old wheels are replaced)")
    ap.add_argument("--python-version", default="3.12", help="the node's Python (major.minor)")
    ap.add_argument("--platform", action="append", default=None,
                    help="wheel platform tags the node accepts (default: manylinux x86_64, glibc >= 2.17)")
    ap.add_argument("--node-freeze", type=Path, default=None,
                    help="`python -m pip freeze` of the node: what it already has (default: the node of issue #14)")
    args = ap.parse_args(argv)
    platforms = args.platform or ["manylinux2014_x86_64", "manylinux_2_17_x86_64", "manylinux_2_28_x86_64",
                                  "linux_x86_64"]
    wheels = build(args.out, args.python_version, platforms, node_packages(args.node_freeze))
    size = sum(w.stat().st_size for w in wheels)
    binary = [w.name for w in wheels if not w.name.endswith("-none-any.whl")]
    for w in wheels:
        print(f"{w.stat().st_size / 2**20:7.2f} MB  {w.name}")
    print(f"{len(wheels)} wheels, {size / 2**20:.1f} MB in {args.out}; platform-specific: {', '.join(binary) or 'none'}")
    print(f"on the node: pip install --no-index --find-links {args.out} cft")
    return 0


if __name__ == "__main__":
    sys.exit(main())
