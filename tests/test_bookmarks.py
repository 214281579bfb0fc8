"""Bookmarks: persistence across reloads, tags/notes, cycling, the CLI, concurrent writers, broken files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from utils.cli import main_guard
from utils.errors import VLMStudiesError
from vlm_datasets.bookmarks import FILE_NAME, Bookmarks, bookmarked_uids, main


def test_bookmarks_survive_reload_and_keep_tags_notes_order(root):
    bm = Bookmarks()
    bm.add("dev-3-1-0", tags=["hard"], note="counts wrong")
    bm.add("dev-1-0-1", tags="colour")
    bm.add("dev-3-1-0", tags=["counting", "hard"])  # again: tags merge, note kept
    assert (root / FILE_NAME).is_file()

    again = Bookmarks()  # a fresh object reads the file, as a new Colab session would
    assert again.uids() == ["dev-3-1-0", "dev-1-0-1"]
    b = again.get("dev-3-1-0")
    assert b["tags"] == ["hard", "counting"] and b["note"] == "counts wrong"
    assert again.uids(tag="hard") == ["dev-3-1-0"]
    assert again.tags() == {"colour": 1, "counting": 1, "hard": 1}

    again.add("dev-3-1-0", note="new note")
    assert Bookmarks().get("dev-3-1-0")["note"] == "new note"
    assert again.remove("dev-3-1-0", tag="hard") is True
    assert Bookmarks().get("dev-3-1-0")["tags"] == ["counting"]
    assert again.remove("dev-1-0-1") is True and again.remove("dev-1-0-1") is False
    assert Bookmarks().uids() == ["dev-3-1-0"]
    data = json.loads((root / FILE_NAME).read_text(encoding="utf-8"))
    assert data["format"] == "vlm_studies_bookmarks" and [b["uid"] for b in data["bookmarks"]] == ["dev-3-1-0"]


def test_next_previous_cycle_with_wraparound(root):
    bm = Bookmarks()
    for uid, tag in [("dev-0-0-0", "a"), ("dev-1-0-0", "b"), ("dev-2-0-0", "a"), ("dev-3-0-0", "a")]:
        bm.add(uid, tags=[tag])
    assert bm.next() == "dev-0-0-0" and bm.previous() == "dev-3-0-0"
    assert bm.next("dev-0-0-0") == "dev-1-0-0"
    assert bm.next("dev-3-0-0") == "dev-0-0-0"  # wraps
    assert bm.previous("dev-0-0-0") == "dev-3-0-0"
    assert bm.next("dev-0-0-0", tag="a") == "dev-2-0-0"
    assert bm.previous("dev-2-0-0", tag="a") == "dev-0-0-0"
    assert Bookmarks().next(tag="nothing") is None


def test_split_filter_uses_recorded_split_or_uid_prefix(root):
    bm = Bookmarks()
    bm.add("dev-0-0-0")
    bm.add("train-5-0-1")
    bm.add("odd-uid", split="validation")
    bm.add("test1-2-0-0")
    assert bm.uids(split="validation") == ["dev-0-0-0", "odd-uid"]
    assert bm.uids(split="train") == ["train-5-0-1"]
    assert bm.uids(split="test") == ["test1-2-0-0"]
    assert bookmarked_uids("__all__", "validation") == ["dev-0-0-0", "odd-uid"]
    with pytest.raises(VLMStudiesError, match="bookmarks add UID --tag missing"):
        bookmarked_uids("missing", "validation")


def test_cli_add_list_remove(root, capsys):
    assert main_guard(main, ["add", "dev-0-1-0", "dev-2-0-1", "--tag", "x", "--tag", "y", "--note", "two tags"]) == 0
    assert "bookmarked 2 uid(s)" in capsys.readouterr().out
    assert main_guard(main, ["list", "--tag", "x", "--json"]) == 0
    items = json.loads(capsys.readouterr().out)
    assert [b["uid"] for b in items] == ["dev-0-1-0", "dev-2-0-1"]
    assert all(b["tags"] == ["x", "y"] and b["note"] == "two tags" for b in items)
    assert main_guard(main, ["remove", "dev-0-1-0"]) == 0
    assert main_guard(main, ["remove", "dev-0-1-0"]) == 2  # nothing left to remove: a clear error
    assert "not bookmarked: dev-0-1-0" in capsys.readouterr().err
    assert main_guard(main, ["add", "bad uid"]) == 2
    assert main_guard(main, ["add", "dev-1-1-1", "--tag", "two words"]) == 2
    assert Bookmarks().uids() == ["dev-2-0-1"]


def test_broken_file_is_an_error_and_left_untouched(root):
    path = root / FILE_NAME
    path.write_text('{"format": "vlm_studies_bookmarks", "bookmarks": [{"uid": "dev-0', encoding="utf-8")
    before = path.read_bytes()
    with pytest.raises(VLMStudiesError, match="not valid JSON"):
        Bookmarks().add("dev-1-0-0")
    assert path.read_bytes() == before


WRITER = textwrap.dedent("""
    import sys, time
    from vlm_datasets.bookmarks import Bookmarks
    worker, n, go = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    import os
    while not os.path.exists(go):  # start together, so the writes really overlap
        time.sleep(0.005)
    bm = Bookmarks()
    for i in range(n):
        bm.add(f"dev-{worker}-{i}-0", tags=[f"w{worker}"])
        bm.add("dev-shared-0-0", tags=[f"w{worker}"])
""")


def test_concurrent_appends_from_several_processes_lose_nothing(root, tmp_path):
    workers, per_worker = 4, 15
    go = tmp_path / "go"
    env = dict(os.environ, VLM_STUDIES_ROOT=str(root))
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(w), str(per_worker), str(go)], env=env,
                              stderr=subprocess.PIPE, text=True, encoding="utf-8") for w in range(workers)]
    go.write_text("", encoding="utf-8")
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    bm = Bookmarks()
    expected = {f"dev-{w}-{i}-0" for w in range(workers) for i in range(per_worker)} | {"dev-shared-0-0"}
    assert set(bm.uids()) == expected and len(bm.uids()) == len(expected)
    assert sorted(bm.get("dev-shared-0-0")["tags"]) == [f"w{w}" for w in range(workers)]
    for w in range(workers):  # each writer's own additions kept their order
        assert [u for u in bm.uids(tag=f"w{w}") if u != "dev-shared-0-0"] == [f"dev-{w}-{i}-0" for i in range(per_worker)]
    assert not [p for p in root.iterdir() if p.name.endswith(".tmp")]  # no temp files left behind
