"""Where an OCI or Docker image is: `oci:DIR[:TAG]`, `oci-archive:FILE[:TAG]`,
`docker-archive:FILE[:TAG]`; its manifest, config and layer blobs, every one checked
against the digest that names it.

Nothing is fetched: an image from a registry is first saved to one of these forms
(`skopeo copy`, `podman save`, `docker save`: docs/oci.md). Archives are read in
place (a tar file's members by name), never unpacked to disk.
"""

from __future__ import annotations

import abc
import hashlib
import json
import os
import platform
import tarfile
from dataclasses import dataclass
from typing import IO, Any, Dict, List, Optional, Tuple

from fim.runtime.errors import FimError

KINDS = ("oci", "oci-archive", "docker-archive")
# A manifest, an index or a config larger than this is no image's.
_MAX_JSON = 16 << 20
_REF_NAME = "org.opencontainers.image.ref.name"
_INDEX_TYPES = ("application/vnd.oci.image.index.v1+json",
                "application/vnd.docker.distribution.manifest.list.v2+json")
_MANIFEST_TYPES = ("application/vnd.oci.image.manifest.v1+json",
                   "application/vnd.docker.distribution.manifest.v2+json")
# Layer media types fim reads (the compression is found from the bytes themselves).
LAYER_TYPES = (
    "application/vnd.oci.image.layer.v1.tar",
    "application/vnd.oci.image.layer.v1.tar+gzip",
    "application/vnd.oci.image.layer.v1.tar+zstd",
    "application/vnd.oci.image.layer.nondistributable.v1.tar",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
    "application/vnd.docker.image.rootfs.diff.tar.gzip",
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
)
_ALGORITHMS = {"sha256": 64, "sha512": 128}
# Debian's names of machines, as OCI platforms name them.
_ARCH = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "i686": "386",
         "i386": "386", "ppc64le": "ppc64le", "s390x": "s390x", "riscv64": "riscv64"}


@dataclass(frozen=True)
class Spec:
    """A parsed SOURCE argument."""

    kind: str  # one of KINDS
    path: str
    tag: str  # "" when none was given


@dataclass(frozen=True)
class LayerRef:
    """One layer blob of the image, oldest first."""

    index: int  # 1-based, as messages count
    name: str  # the blob's path in the layout or archive
    digest: str  # "sha256:..." of the blob as stored, "" when the source names none
    diff_id: str  # digest of the uncompressed tar, from the config ("" when absent)
    size: int  # of the blob, -1 when the source does not say


@dataclass(frozen=True)
class Image:
    source: str  # the SOURCE as given
    reference: str  # the tag or reference chosen, "" when the source has one image only
    manifest_digest: str  # "" for a docker-archive, whose manifest has no digest
    config_digest: str
    config: Dict[str, Any]
    layers: List[LayerRef]


def parse(text: str) -> Optional[Spec]:
    """The image source `text` names, None for a plain directory. A path holding a
    colon is taken whole when it exists, else the part after the last colon is a tag."""
    kind, sep, rest = text.partition(":")
    if not sep or kind not in KINDS:
        return None
    if not rest:
        raise FimError(f"'{text}' names no path (e.g. {kind}:/path/to/image)")
    if os.path.exists(rest):
        return Spec(kind, rest, "")
    path, sep, tag = rest.rpartition(":")
    if sep and path and tag and os.path.exists(path):
        return Spec(kind, path, tag)
    raise FimError(f"Image source '{rest}' does not exist")


class Store(abc.ABC):
    """The files of an image layout: a directory, or the members of a tar archive."""

    @abc.abstractmethod
    def open(self, name: str) -> IO[bytes]: ...

    @abc.abstractmethod
    def exists(self, name: str) -> bool: ...

    @abc.abstractmethod
    def size(self, name: str) -> int: ...

    def close(self) -> None:  # noqa: B027 - a directory has nothing to close
        return None


def _clean(name: str) -> Optional[str]:
    """`name` relative to the layout's root, None when it leaves it."""
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if not parts or ".." in parts or name.startswith("/"):
        return None
    return "/".join(parts)


class DirStore(Store):
    def __init__(self, root: str, label: str) -> None:
        self.root = os.path.realpath(root)
        self.label = label

    def _path(self, name: str) -> str:
        clean = _clean(name)
        path = os.path.realpath(os.path.join(self.root, clean)) if clean else ""
        if not clean or not path.startswith(self.root + os.sep):
            raise FimError(f"'{self.label}' names '{name}', which is outside the layout")
        return path

    def open(self, name: str) -> IO[bytes]:
        try:
            return open(self._path(name), "rb")
        except FileNotFoundError:
            raise missing(self.label, name) from None

    def exists(self, name: str) -> bool:
        return os.path.isfile(self._path(name))

    def size(self, name: str) -> int:
        try:
            return os.path.getsize(self._path(name))
        except FileNotFoundError:
            raise missing(self.label, name) from None


class TarStore(Store):
    """An archive's members by name; symbolic links between members (docker-archive's
    `ID/layer.tar -> ../DIGEST.tar`) are followed inside the archive."""

    def __init__(self, path: str, label: str) -> None:
        self.label = label
        try:
            # r:* also reads an archive compressed as a whole (docker save | gzip).
            self.tar = tarfile.open(path, "r:*")  # noqa: SIM115 - open while the build reads
            members = self.tar.getmembers()
        except (tarfile.TarError, EOFError, OSError) as e:
            raise FimError(f"'{label}' is not a readable tar archive ({_why(e)})") from None
        self.members: Dict[str, tarfile.TarInfo] = {}
        for m in members:
            clean = _clean(m.name)
            if clean is not None and (m.isreg() or m.issym() or m.islnk()):
                self.members[clean] = m

    def _member(self, name: str) -> tarfile.TarInfo:
        clean = _clean(name)
        for _ in range(8):
            m = self.members.get(clean or "")
            if m is None:
                raise missing(self.label, name)
            if m.isreg():
                return m
            base = "" if m.islnk() else os.path.dirname(clean or "")
            clean = _clean(os.path.normpath(os.path.join(base, m.linkname)))
        raise FimError(f"'{self.label}': '{name}' is a loop of links")

    def open(self, name: str) -> IO[bytes]:
        f = self.tar.extractfile(self._member(name))
        if f is None:
            raise missing(self.label, name)
        return f

    def exists(self, name: str) -> bool:
        try:
            self._member(name)
            return True
        except FimError:
            return False

    def size(self, name: str) -> int:
        return self._member(name).size

    def close(self) -> None:
        self.tar.close()


def missing(label: str, name: str) -> FimError:
    return FimError(f"'{label}' has no '{name}' (a missing blob: the image is incomplete)")


def _why(e: BaseException) -> str:
    return str(e) or type(e).__name__


def blob_name(label: str, digest: Any) -> str:
    """The path of a blob in an OCI layout, from its digest (checked for form)."""
    alg, sep, hexa = digest.partition(":") if isinstance(digest, str) else ("", "", "")
    if not sep or _ALGORITHMS.get(alg) != len(hexa) or \
            any(c not in "0123456789abcdef" for c in hexa):
        raise FimError(f"'{label}' names a blob by the invalid digest '{digest}'")
    return f"blobs/{alg}/{hexa}"


def check_digest(label: str, what: str, data: bytes, digest: str) -> None:
    alg, _, hexa = digest.partition(":")
    if hashlib.new(alg, data).hexdigest() != hexa:
        raise FimError(f"'{label}': the {what} {digest} does not match its digest "
                       "(the image is damaged or was altered)", 1)


def _read_json(store: Store, label: str, name: str, digest: str = "") -> Tuple[Any, bytes]:
    if store.size(name) > _MAX_JSON:
        raise FimError(f"'{label}': '{name}' is too large for an image's metadata")
    with store.open(name) as f:
        data = f.read()
    if digest:
        check_digest(label, name.rsplit("/", 1)[-1] if name.startswith("blobs/") else name,
                     data, digest)
    try:
        return json.loads(data), data
    except ValueError as e:
        raise FimError(f"'{label}': '{name}' is not valid JSON ({e})") from None


def open_store(spec: Spec, label: str) -> Store:
    if spec.kind == "oci":
        if not os.path.isdir(spec.path):
            raise FimError(f"'{label}' is not a directory (an OCI image layout)")
        return DirStore(spec.path, label)
    if not os.path.isfile(spec.path):
        raise FimError(f"'{label}' is not a file (an {spec.kind})")
    return TarStore(spec.path, label)


def resolve(spec: Spec, store: Store, label: str) -> Image:
    if spec.kind == "docker-archive":
        return _docker(spec, store, label)
    return _oci(spec, store, label)


def _tags(names: List[str]) -> str:
    return ", ".join(repr(n) for n in names) or "none"


def _oci(spec: Spec, store: Store, label: str) -> Image:
    if not store.exists("oci-layout"):
        raise FimError(f"'{label}' is not an OCI image layout (it has no oci-layout file)")
    index, _ = _read_json(store, label, "index.json")
    manifests = _entries(index, label, "index.json")
    if spec.tag:
        chosen = [m for m in manifests if m.get("annotations", {}).get(_REF_NAME) == spec.tag]
        if not chosen:
            names = [m.get("annotations", {}).get(_REF_NAME, "") for m in manifests]
            raise FimError(f"'{label}' has no image named '{spec.tag}' "
                           f"(it has: {_tags([n for n in names if n])})")
    else:
        chosen = manifests
        if len(chosen) > 1:
            names = [m.get("annotations", {}).get(_REF_NAME, "") for m in manifests]
            listed = _tags([n for n in names if n])
            raise FimError(f"'{label}' holds {len(chosen)} images; name one as "
                           f"{spec.kind}:{spec.path}:NAME (names: {listed})")
    descriptor = chosen[0]
    for _ in range(4):  # an index of indexes, at most this deep
        if descriptor.get("mediaType") not in _INDEX_TYPES:
            break
        nested, _ = _read_json(store, label, blob_name(label, descriptor.get("digest")),
                               descriptor.get("digest", ""))
        descriptor = _platform(_entries(nested, label, "an image index"), label)
    digest = descriptor.get("digest", "")
    manifest, _ = _read_json(store, label, blob_name(label, digest), digest)
    if manifest.get("mediaType", _MANIFEST_TYPES[0]) not in _MANIFEST_TYPES or \
            not isinstance(manifest.get("layers"), list):
        raise FimError(f"'{label}': {digest} is not an image manifest")
    config_digest = manifest.get("config", {}).get("digest", "")
    config, _ = _read_json(store, label, blob_name(label, config_digest), config_digest)
    diff_ids = _diff_ids(config, label, len(manifest["layers"]))
    layers = []
    for i, d in enumerate(manifest["layers"]):
        media = d.get("mediaType", "") if isinstance(d, dict) else ""
        if media not in LAYER_TYPES:
            raise FimError(f"'{label}': layer {i + 1} is of the type '{media}', which fim "
                           "cannot read (encrypted or unknown)")
        layers.append(LayerRef(i + 1, blob_name(label, d.get("digest")), d["digest"],
                               diff_ids[i], int(d.get("size", -1))))
    return Image(label, spec.tag, digest, config_digest, config, layers)


def _entries(index: Any, label: str, what: str) -> List[Dict[str, Any]]:
    manifests = index.get("manifests") if isinstance(index, dict) else None
    if not isinstance(manifests, list) or not manifests or \
            not all(isinstance(m, dict) for m in manifests):
        raise FimError(f"'{label}': {what} lists no image")
    return manifests


def _platform(manifests: List[Dict[str, Any]], label: str) -> Dict[str, Any]:
    """The entry of a multi-platform index for this machine (Linux, its architecture)."""
    arch = _ARCH.get(platform.machine(), platform.machine())
    for m in manifests:
        p = m.get("platform", {})
        if p.get("os", "linux") == "linux" and p.get("architecture") == arch:
            return m
    offered = [f"{m.get('platform', {}).get('os')}/{m.get('platform', {}).get('architecture')}"
               for m in manifests]
    raise FimError(f"'{label}' has no image for linux/{arch} (it has: {_tags(offered)})")


def _diff_ids(config: Any, label: str, count: int) -> List[str]:
    ids = config.get("rootfs", {}).get("diff_ids") if isinstance(config, dict) else None
    if not isinstance(ids, list) or len(ids) != count or \
            not all(isinstance(d, str) for d in ids):
        raise FimError(f"'{label}': the image config lists {len(ids or [])} layers and "
                       f"the manifest {count}")
    for d in ids:
        blob_name(label, d)  # the form of each digest
    return ids


def _docker(spec: Spec, store: Store, label: str) -> Image:
    """`docker save` / `podman save --format docker-archive`: manifest.json lists each
    image's config file and layer files; the config's diff_ids are the layers' digests."""
    entries, _ = _read_json(store, label, "manifest.json")
    if not isinstance(entries, list) or not entries or \
            not all(isinstance(e, dict) for e in entries):
        raise FimError(f"'{label}': manifest.json lists no image")
    tags = [t for e in entries for t in e.get("RepoTags") or []]
    if spec.tag:
        wanted = {spec.tag, f"{spec.tag}:latest", f"localhost/{spec.tag}",
                  f"localhost/{spec.tag}:latest"}
        chosen = [e for e in entries if wanted & set(e.get("RepoTags") or [])]
        if not chosen:
            raise FimError(f"'{label}' has no image tagged '{spec.tag}' (it has: {_tags(tags)})")
    elif len(entries) > 1:
        raise FimError(f"'{label}' holds {len(entries)} images; name one as "
                       f"docker-archive:{spec.path}:TAG (tags: {_tags(tags)})")
    else:
        chosen = entries
    entry = chosen[0]
    config_name = entry.get("Config")
    layer_names = entry.get("Layers")
    if not isinstance(config_name, str) or not isinstance(layer_names, list):
        raise FimError(f"'{label}': manifest.json names no config or no layers")
    # The config's file is named by its digest (DIGEST.json, or blobs/sha256/DIGEST).
    stem = os.path.basename(config_name).split(".")[0]
    config_digest = f"sha256:{stem}" if len(stem) == 64 else ""
    config, _ = _read_json(store, label, config_name, config_digest)
    diff_ids = _diff_ids(config, label, len(layer_names))
    layers = []
    for i, name in enumerate(layer_names):
        if not isinstance(name, str):
            raise FimError(f"'{label}': manifest.json names layer {i + 1} by no file")
        # Docker 25 and later store blobs as in an OCI layout, named by their digest.
        hexa = name.rsplit("/", 1)[-1]
        digest = f"sha256:{hexa}" if name.startswith("blobs/sha256/") else ""
        layers.append(LayerRef(i + 1, name, digest, diff_ids[i], store.size(name)))
    reference = spec.tag or (entry.get("RepoTags") or [""])[0]
    return Image(label, reference, "", config_digest, config, layers)
