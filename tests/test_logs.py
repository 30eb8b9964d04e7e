"""Training logs: a CSV per model, a plain line per epoch off a terminal, the early stop said on the bar/line."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest
from helpers import make_config, write_case

import cmkd
from cmkd.evaluation.logs import history_csv, write_history_csvs


def test_history_csv_columns_and_files(tmp_path: Path) -> None:
    rows = [{"epoch": 1, "lr": 0.1, "train_loss": 2.0, "val_metric": 0.5},
            {"epoch": 2, "lr": 0.1, "train_loss": 1.5, "train_kd": 0.3, "val_metric": 0.6}]
    got = list(csv.DictReader(io.StringIO(history_csv(rows))))
    assert list(got[0]) == ["epoch", "lr", "train_loss", "val_metric", "train_kd"]
    assert got[0]["train_kd"] == "" and got[1]["train_kd"] == "0.3"
    paths = write_history_csvs(tmp_path / "logs", {"student": rows, "teacher": rows[:1], "odd": {"x": 1}})
    assert sorted(p.name for p in paths) == ["student.csv", "teacher.csv"]


@pytest.mark.slow  # a full run
def test_plain_epoch_lines_and_early_stop(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Under pytest stderr is not a terminal: every epoch prints one plain line, and an early stop says where."""
    cfg = make_config(epochs=1)
    cfg["student"].update(epochs=40, patience=1)
    y = write_case(tmp_path, config=cfg)
    cmkd.run(str(y), tmp_path / "out", overrides=["export.enabled=false"])
    out = capsys.readouterr().out
    lines = [ln for ln in out.splitlines() if ln.startswith("student epoch ")]
    assert lines and lines[0].startswith("student epoch 1/40: loss ")
    assert "stopped early at epoch" in lines[-1] and "(best " in lines[-1]
    k = int(lines[-1].split("stopped early at epoch ")[1].split()[0])
    assert k == len(lines) < 40
    assert len((tmp_path / "out" / "logs" / "student.csv").read_text().splitlines()) == k + 1


def test_tensorboard_event_files(tmp_path: Path) -> None:
    """TFRecord framing with valid masked CRC-32C, a file_version event first, then one scalar event per epoch
    (train/loss, val/metric, lr) with the history's values."""
    import struct

    from cmkd.evaluation.logs import crc32c, read_records, write_tensorboard

    assert crc32c(b"123456789") == 0xE3069283  # the CRC-32C check value
    rows = [{"epoch": 1, "lr": 0.1, "train_loss": 2.0, "train_kd": 0.25, "val_metric": 0.5},
            {"epoch": 2, "lr": 0.1, "train_loss": 1.5, "val_metric": float("nan")}]
    (path,) = write_tensorboard(tmp_path / "tb", {"student": rows})
    assert path.parent.name == "student" and path.name.startswith("events.out.tfevents.")
    recs = read_records(path)
    assert len(recs) == 3 and b"brain.Event:2" in recs[0]

    def scalar(rec: bytes, tag: str) -> float | None:
        i = rec.find(tag.encode())
        if i < 0:
            return None
        j = i + len(tag)
        assert rec[j] == 0x15  # field 2 (simple_value), wire type 5 (32-bit float)
        return struct.unpack("<f", rec[j + 1:j + 5])[0]

    assert scalar(recs[1], "train/loss") == 2.0 and scalar(recs[1], "train/kd") == 0.25
    assert scalar(recs[1], "val/metric") == 0.5 and scalar(recs[2], "train/loss") == 1.5
    assert scalar(recs[2], "val/metric") is None  # NaN is left out
    write_tensorboard(tmp_path / "tb", {"student": rows})  # a rerun replaces the model's event file
    assert len(list(path.parent.glob("events.out.tfevents.*"))) == 1


@pytest.mark.slow  # a full run
def test_validation_loss_is_logged(tmp_path: Path) -> None:
    """Every epoch row has val_loss (the task loss on validation), finite and positive, in the CSV too."""
    cfg = make_config(epochs=2)
    y = write_case(tmp_path, config=cfg)
    cmkd.run(str(y), tmp_path / "out", quiet=True, overrides=["export.enabled=false", "references=false",
                                                               "trees=false"])
    rows = list(csv.DictReader(io.StringIO((tmp_path / "out" / "logs" / "teacher.csv").read_text())))
    assert rows and all(float(r["val_loss"]) > 0 for r in rows)
