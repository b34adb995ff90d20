"""idmap: which subordinate ids a caller has, read from /etc/subuid-style files."""

from __future__ import annotations

import os
from pathlib import Path

from fim.runtime import idmap


def test_ranges_by_name_or_number(tmp_path: Path) -> None:
    f = tmp_path / "subuid"
    f.write_text("# comment\nalice:100000:65536\nbroken:x:1\n1002:200000:1000\nzero:5:0\n")
    assert idmap.ranges(str(f), "alice", 1001) == (100000, 65536)
    assert idmap.ranges(str(f), "bob", 1002) == (200000, 1000)
    assert idmap.ranges(str(f), "broken", 9) is None
    assert idmap.ranges(str(f), "zero", 9) is None  # an empty range grants nothing
    assert idmap.ranges(str(tmp_path / "missing"), "alice", 1001) is None


def test_subordinate_needs_both_files_and_is_off_for_root(tmp_path: Path) -> None:
    uid_file, gid_file = tmp_path / "subuid", tmp_path / "subgid"
    uid_file.write_text("1001:100000:200000\n")
    files = (str(uid_file), str(gid_file))
    assert idmap.subordinate(1001, 1001, {}, files) is None  # no group range
    gid_file.write_text("1001:300000:65536\n")
    sub = idmap.subordinate(1001, 1001, {}, files)
    if not (os.path.exists("/usr/bin/newuidmap") and os.path.exists("/usr/bin/newgidmap")):
        assert sub is None
        return
    assert sub is not None
    assert (sub.uid_start, sub.gid_start, sub.count) == (100000, 300000, 65536)
    assert sub.uid_args(42, 1001) == ("newuidmap", "42", "0", "1001", "1", "1", "100000",
                                      "65536")
    assert idmap.subordinate(1001, 1001, {"FIM_SUBIDS": "0"}, files) is None
    assert idmap.subordinate(0, 0, {}, files) is None
