"""gpu.nvidia: the host's NVIDIA userspace, found in a tree laid out as NVIDIA's
installer lays it out (no NVIDIA GPU is needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Dict

from fim.runtime import gpu, permissions
from fim.runtime.image.settings import PERMISSIONS

VERSION = "550.54.14"
ELF64 = b"\x7fELF\x02\x01\x01" + bytes(57)
ELF32 = b"\x7fELF\x01\x01\x01" + bytes(45)


def nvidia_tree(root: Path, version: str = VERSION) -> None:
    """Libraries with their soname links, 32-bit ones, manifests, nvidia-smi, a
    leftover of an older driver and files that are not NVIDIA's own."""
    lib64 = root / "usr/lib/x86_64-linux-gnu"
    lib32 = root / "usr/lib/i386-linux-gnu"
    for d, head in ((lib64, ELF64), (lib32, ELF32)):
        d.mkdir(parents=True)
        for name, links in (("libGLX_nvidia", ["so.0"]), ("libEGL_nvidia", ["so.0"]),
                            ("libnvidia-glcore", []), ("libcuda", ["so.1", "so"])):
            (d / f"{name}.so.{version}").write_bytes(head)
            for link in links:
                (d / f"{name}.{link}").symlink_to(f"{name}.so.{version}")
        (d / "libnvidia-glcore.so.535.104.05").write_bytes(head)  # an older driver's
        (d / "libnvidia-egl-wayland.so.1.1.13").write_bytes(head)  # a distribution's
        (d / "libc.so.6").write_bytes(head)
    (root / "usr/share/vulkan/icd.d").mkdir(parents=True)
    (root / "usr/share/vulkan/icd.d/nvidia_icd.json").write_text("{}")
    (root / "usr/share/vulkan/icd.d/lvp_icd.x86_64.json").write_text("{}")
    (root / "usr/share/glvnd/egl_vendor.d").mkdir(parents=True)
    (root / "usr/share/glvnd/egl_vendor.d/10_nvidia.json").write_text("{}")
    (root / "usr/bin").mkdir(parents=True)
    (root / "usr/bin/nvidia-smi").write_bytes(ELF64)
    (root / "usr/bin/nvidia-settings").write_bytes(ELF64)
    (root / "sys/module/nvidia").mkdir(parents=True)
    (root / "sys/module/nvidia/version").write_text(version + "\n")


def _binds(options: list) -> Dict[str, str]:
    return {o[2]: o[1] for o in options if o[0] == "--ro-bind"}


def test_the_loaded_drivers_files_go_under_one_tmpfs(tmp_path: Path) -> None:
    nvidia_tree(tmp_path)
    options, env = gpu.nvidia(str(tmp_path))
    assert options[0] == ("--tmpfs", gpu.HOST_DIR)
    binds = _binds(options)
    lib64 = tmp_path / "usr/lib/x86_64-linux-gnu"
    h = gpu.HOST_DIR
    # Soname links become binds of the file they lead to, under their own name.
    assert binds[f"{h}/lib/libGLX_nvidia.so.0"] == str(lib64 / f"libGLX_nvidia.so.{VERSION}")
    assert binds[f"{h}/lib/libcuda.so.1"] == str(lib64 / f"libcuda.so.{VERSION}")
    assert f"{h}/lib/libnvidia-glcore.so.{VERSION}" in binds
    assert f"{h}/lib32/libGLX_nvidia.so.0" in binds
    assert binds[f"{h}/lib32/libcuda.so.{VERSION}"].startswith(str(tmp_path / "usr/lib/i386"))
    assert f"{h}/share/vulkan/icd.d/nvidia_icd.json" in binds
    assert f"{h}/share/glvnd/egl_vendor.d/10_nvidia.json" in binds
    assert f"{h}/bin/nvidia-smi" in binds
    names = " ".join(binds)
    for absent in ("535.104.05", "egl-wayland", "libc.so", "lvp_icd", "nvidia-settings"):
        assert absent not in names
    assert env == {
        "LD_LIBRARY_PATH": f"{h}/lib:{h}/lib32",
        "XDG_DATA_DIRS": f"{h}/share",
        "__EGL_VENDOR_LIBRARY_DIRS": f"{h}/share/glvnd/egl_vendor.d",
        "PATH": f"{h}/bin",
    }


def test_no_driver_no_binds(tmp_path: Path) -> None:
    (tmp_path / "usr/lib/x86_64-linux-gnu").mkdir(parents=True)
    assert gpu.nvidia(str(tmp_path)) == ([], {})


def test_search_paths_are_extended_after_the_containers_own(tmp_path: Path) -> None:
    from fim.runtime import sandbox

    nvidia_tree(tmp_path)
    g = permissions.grant(PERMISSIONS.parse("gpu"), {}, 1000, host=str(tmp_path))
    assert ("--dev-bind-try", "/dev/dri", "/dev/dri") in g.options
    ident = sandbox.Identity(uid=1000, gid=1000, user="u", home="/home/u", shell="/bin/sh")
    env = sandbox.environment({"LD_LIBRARY_PATH": "/opt/app/lib"}, ident, {}, g.env, (),
                              g.appended)
    h = gpu.HOST_DIR
    assert env["LD_LIBRARY_PATH"] == f"/opt/app/lib:{h}/lib:{h}/lib32"
    assert env["XDG_DATA_DIRS"] == f"/usr/local/share:/usr/share:{h}/share"
    assert env["__EGL_VENDOR_LIBRARY_DIRS"].endswith(f":{h}/share/glvnd/egl_vendor.d")
    assert env["PATH"].endswith(f":{h}/bin")
