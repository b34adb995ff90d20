"""The writable root of an instance: its spec from the configuration, and the root
the backend builds on it (upper dir claimed, overlay mounted, casefold's view on
top). Shared by an instance's init and the keeper, which builds it once for many."""

from __future__ import annotations

from fim.runtime import overlays
from fim.runtime.overlays import upperdir

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Mapping, Optional, Sequence

    from fim.runtime.config import Config
    from fim.runtime.unwind import Stack


def spec(cfg: Config, lowers: Sequence[str], env: Mapping[str, str]) -> overlays.RootSpec:
    p = cfg.paths
    return overlays.RootSpec(
        layers=cfg.layers, lowers=tuple(lowers), upper=p.dir_upper, work=p.dir_work,
        mountpoint=p.dir_mount, scratch=p.dir_instance, cache=p.dir_markers, logs=p.dir_logs,
        runtime=p.dir_runtime, environ=env,
    )


def build(stack: Stack, cfg: Config, backend: overlays.Backend,
          spec: overlays.RootSpec) -> overlays.Root:
    """The writable root of `backend` over the mounted layers, with the case-insensitive
    view on top when casefold is on; the upper dir claimed for as long as `stack` lives."""
    paths = cfg.paths
    upperdir.claim(stack, paths.state_file, paths.dir_upper, backend, spec.lowers)
    return _viewed(stack, cfg, overlays.implementation(backend).build(stack, spec))


def keep(stack: Stack, cfg: Config, spec: overlays.RootSpec) -> Optional[overlays.Root]:
    """The root a keeper holds for its instances (build's, for the backend's `keep`);
    None when the backend cannot hold one, with nothing of the attempt left: not
    even the claim on the upper dir, which the instances' fallback may need."""
    paths = cfg.paths
    depth = len(stack)
    upperdir.claim(stack, paths.state_file, paths.dir_upper, cfg.backend, spec.lowers)
    root: Optional[overlays.Root] = overlays.implementation(cfg.backend).keep(stack, spec)
    if root is None:
        stack.unwind_to(depth)
        return None
    return _viewed(stack, cfg, root)


def _viewed(stack: Stack, cfg: Config, root: overlays.Root) -> overlays.Root:
    """`root` with the case-insensitive view on top when casefold is on."""
    if not cfg.casefold:
        return root
    from fim.runtime.casefold import view

    return view.stack_on(stack, root, cfg.paths.dir_casefold)
