"""The ``qbb`` command: help, version, benchmarks' JSON interface, clear errors."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from qbb.cli import main

LINE3 = str(Path(__file__).resolve().parent.parent / "topologies" / "line3.json")
REQUIRED = {"bench", "case", "metric", "value", "unit"}


def test_help_lists_every_command(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "dissect" in out and "bench" in out


def test_no_command_prints_help_and_fails(capsys):
    assert main([]) == 2
    assert "usage: qbb" in capsys.readouterr().out


def test_module_entry_point_reports_version():
    out = subprocess.run([sys.executable, "-m", "qbb", "--version"], capture_output=True,
                         text=True, check=True).stdout
    assert out.startswith("qbb ")


def test_bench_list_and_unknown_name(capsys):
    assert main(["bench", "--list"]) == 0
    assert "codecs" in capsys.readouterr().out
    assert main(["bench", "no-such-bench"]) == 2
    assert "unknown benchmark 'no-such-bench'" in capsys.readouterr().err


def test_bench_codecs_json_rows(capsys):
    assert main(["bench", "codecs", "--quick", "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert rows and all(REQUIRED <= row.keys() for row in rows)
    assert all(row["bench"] == "codecs" and row["value"] > 0 for row in rows)
    cases = {row["case"] for row in rows}
    assert {"ospf-lsu", "qkdnl-header", "q3p-frame-1444B", "qrokr-reserve"} <= cases
    speedups = [r for r in rows if r["metric"].endswith("_speedup")]
    assert len(speedups) == 10


SUMMARY_KEYS = {"mode", "nodes", "links", "converged", "convergence_s", "keys_delivered_bits",
                "drops", "key_reuse_detected"}


def test_run_embedded_virtual_time_json(capsys):
    assert main(["run", LINE3, "--virtual-time", "--duration", "10",
                 "--json"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert SUMMARY_KEYS <= summary.keys()
    assert summary["mode"] == "embedded" and summary["converged"] is True
    assert summary["keys_delivered_bits"] > 0 and summary["key_reuse_detected"] is False


def test_run_bad_inputs_are_clear_errors(tmp_path, capsys):
    assert main(["run", str(tmp_path / "missing.json")]) == 2
    assert "missing.json" in capsys.readouterr().err
    assert main(["run", LINE3, "--pairs", "X:Y", "--virtual-time"]) == 2
    assert "--pairs" in capsys.readouterr().err
