from pathlib import Path

import pytest

from appliance.runtime import cpus


def test_v1_quota_of_the_process_cgroup_as_pi_class_sets_it(tmp_path: Path) -> None:
    group = tmp_path / "cpu" / "pi-class-pi5-1"
    group.mkdir(parents=True)
    (group / "cpu.cfs_quota_us").write_text("50000\n")
    (group / "cpu.cfs_period_us").write_text("100000\n")
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")  # the root: no quota
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    proc = "4:memory:/pi-class-pi5-1\n1:cpu:/pi-class-pi5-1\n0::/\n"
    assert cpus.cgroup_cpu_quota(proc, tmp_path) == 0.5


@pytest.mark.parametrize(
    ("leaf", "parent", "expected"),
    [
        ("max 100000", "max 100000", None),
        ("150000 100000", "max 100000", 1.5),
        ("max 100000", "300000 100000", 3.0),  # a parent's quota binds the child
        ("400000 100000", "100000 100000", 1.0),  # the tightest wins
        ("garbage", "max", None),
    ],
)
def test_v2_quota_is_the_tightest_up_the_tree(
    tmp_path: Path, leaf: str, parent: str, expected: float | None
) -> None:
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "b" / "cpu.max").write_text(leaf + "\n")
    (tmp_path / "a" / "cpu.max").write_text(parent + "\n")
    assert cpus.cgroup_cpu_quota("0::/a/b\n", tmp_path) == expected


def test_no_cgroup_file_means_no_quota(tmp_path: Path) -> None:
    assert cpus.cgroup_cpu_quota("", tmp_path) is None
    assert cpus.cgroup_cpu_quota("0::/missing\n", tmp_path / "absent") is None


@pytest.mark.parametrize(
    ("usable", "threads"),
    [(0.2, 1), (0.5, 1), (1.0, 1), (2.0, 1), (2.9, 1), (3.0, 2), (4.0, 2), (16.0, 2)],
)
def test_auto_threads(usable: float, threads: int) -> None:
    assert cpus.auto_threads(usable) == threads


def test_usable_cpus_is_capped_by_the_quota(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cpus, "cgroup_cpu_quota", lambda: 0.5)
    assert cpus.usable_cpus() == 0.5
    monkeypatch.setattr(cpus, "cgroup_cpu_quota", lambda: None)
    assert cpus.usable_cpus() >= 1
