"""A process that starts marks only the jobs of stopped processes as interrupted (several API
workers over one data directory: a restarted worker leaves the others' running jobs alone)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

from privrec.service.jobs import JobHistory, process_alive, process_identity


def test_only_the_jobs_of_stopped_processes_are_interrupted(tmp_path: Path) -> None:
    history = JobHistory(tmp_path)
    mine = history.new("train", model="ease")  # this (live) process owns it
    history.update(mine["id"], status="running")
    done = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    dead_pid = int(done.stdout)
    dead = history.new("train", model="als")
    history.update(dead["id"], owner={**process_identity(), "pid": dead_pid})
    reused = history.new("train", model="bpr")  # a live pid, but a later start: not the owner
    owner = process_identity()
    history.update(reused["id"], owner={**owner, "started": (owner["started"] or 0) - 1})
    legacy = history.new("train", model="itemknn")
    history.update(legacy["id"], owner=None)  # written before owners were kept
    elsewhere = history.new("train", model="hybrid")
    history.update(elsewhere["id"], owner={**owner, "host": socket.gethostname() + "-other"})

    assert history.interrupted() == 3
    status = {j: history.get(j)["status"] for j in (mine["id"], elsewhere["id"])}
    assert status == {mine["id"]: "running", elsewhere["id"]: "queued"}
    for j in (dead["id"], reused["id"], legacy["id"]):
        rec = history.get(j)
        assert rec["status"] == "failed" and rec["reason"].startswith("interrupted")


def test_process_identity_names_this_process() -> None:
    me = process_identity()
    assert me["pid"] == os.getpid() and me["host"] == socket.gethostname()
    assert process_alive(me)
    assert not process_alive(None) and not process_alive({"host": me["host"]})
