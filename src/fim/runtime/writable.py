"""The writable root of an instance: its spec from the configuration, and the root
the backend builds on it (upper dir claimed, overlay mounted, casefold's view on
top). Shared by an instance's init and the keeper, which builds it once for many."""

from __future__ import annotations

from fim.runtime import overlays
from fim.runtime.overlays import upperdir

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Mapping, Sequence

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
    root: overlays.Root = overlays.implementation(backend).build(stack, spec)
    if cfg.casefold:
        from fim.runtime.casefold import view

        root = view.stack_on(stack, root, paths.dir_casefold)
    return root
