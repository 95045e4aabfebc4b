"""Every report writer archives the report it overwrites; the index never loses an older one."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

from privrec.evaluation.privacy_frontier import FrontierPoint
from privrec.evaluation.privacy_report import write_privacy_report
from privrec.evaluation.report import write_report
from privrec.evaluation.report_archive import ARCHIVE, keep_previous, reports_root
from privrec.service.report_index import index


def _archived(reports: Path, name: str) -> list[Path]:
    return sorted((reports / ARCHIVE).rglob(f"*-{name}"))


def _age(*paths: Path) -> None:
    """Back-date files a minute, as an earlier run would have left them."""
    for p in paths:
        t = p.stat().st_mtime - 60
        os.utime(p, (t, t))


def test_evaluation_report_rewritten_keeps_the_older_one(tmp_path: Path) -> None:
    reports = tmp_path / "data" / "reports"
    html1, json1 = write_report(
        [{"model": "pop", "metrics": {"ndcg@10": 0.1}}], reports, title="run 1", dataset_info={}
    )
    md = reports / "report.md"  # the demo writes a Markdown twin beside it
    md.write_text("# run 1\n")
    _age(html1, json1, md)
    assert not (reports / ARCHIVE).exists()  # nothing older yet: nothing archived
    write_report(
        [{"model": "pop", "metrics": {"ndcg@10": 0.7}}], reports, title="run 2", dataset_info={}
    )
    md.write_text("# run 2\n")
    (old_json,) = _archived(reports, "report.json")
    assert json.loads(old_json.read_text())["results"][0]["metrics"]["ndcg@10"] == 0.1
    assert json.loads(json1.read_text())["results"][0]["metrics"]["ndcg@10"] == 0.7
    (old_md,) = _archived(reports, "report.md")
    assert old_md.read_text() == "# run 1\n"
    assert "run 1" in _archived(reports, "report.html")[0].read_text()
    # the index lists the current report and the older one (the same content only once)
    listed = index(reports)
    names = [f.name for f in listed if f.name.endswith("report.json")]
    assert names[0] == "report.json" and len(names) == 2
    assert [f.archived for f in listed if f.name.endswith("report.json")] == [False, True]
    # a third write of identical content archives nothing new
    before = sorted((reports / ARCHIVE).rglob("*"))
    assert keep_previous(reports) == []
    assert sorted((reports / ARCHIVE).rglob("*")) == before


def _point(eps: float, ndcg: float) -> FrontierPoint:
    return FrontierPoint(
        dataset="toy",
        model="dp_popularity" if math.isfinite(eps) else "popularity",
        epsilon=eps,
        delta=None,
        ndcg_at_10=ndcg,
        metrics={"ndcg@10": ndcg},
        attack_auc=0.5,
        attack_tpr_at_1pct_fpr=0.01,
        attack_auc_std=0.01,
        fit_seconds=0.1,
    )


def test_privacy_report_in_a_sub_folder_archives_under_the_reports_folder(
    tmp_path: Path,
) -> None:
    reports = tmp_path / "data" / "reports"
    out = reports / "privacy"
    first = write_privacy_report(out, points=[_point(1.0, 0.1), _point(math.inf, 0.2)])
    _age(*first.values())
    write_privacy_report(out, points=[_point(1.0, 0.3), _point(math.inf, 0.4)])
    (old,) = sorted((reports / ARCHIVE / "privacy").glob("*-" + first["json"].name))
    assert '"ndcg_at_10": 0.1' in old.read_text()
    assert '"ndcg_at_10": 0.3' in first["json"].read_text()
    assert not (out / ARCHIVE).exists()  # one archive per reports folder
    names = {f.name for f in index(reports)}
    assert f"privacy/{first['json'].name}" in names
    assert any(n.startswith("archive/privacy/") and n.endswith(first["json"].name) for n in names)


def test_reports_root(tmp_path: Path) -> None:
    assert reports_root(tmp_path / "d" / "reports" / "robustness") == tmp_path / "d" / "reports"
    assert reports_root(tmp_path / "d" / "reports") == tmp_path / "d" / "reports"
    # a folder of its own (--out elsewhere) keeps its archive inside itself
    assert reports_root(tmp_path / "elsewhere") == tmp_path / "elsewhere"
    assert keep_previous(tmp_path / "missing") == []


def test_privrec_evaluate_moving_a_new_report_in_archives_the_old(tmp_path: Path) -> None:
    from privrec.cli.evaluate import _move_into_place

    reports = tmp_path / "data" / "reports"
    reports.mkdir(parents=True)
    (reports / "report.json").write_text('{"run": 1}\n')
    tmp = tmp_path / "data" / ".evaluate-x"
    tmp.mkdir()
    (tmp / "report.json").write_text('{"run": 2}\n')
    _move_into_place(tmp, reports)
    assert (reports / "report.json").read_text() == '{"run": 2}\n'
    (old,) = _archived(reports, "report.json")
    assert old.read_text() == '{"run": 1}\n'
