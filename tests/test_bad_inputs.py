"""User mistakes through the real CLI: exit code 2, one ``error:`` line naming the key or file, no traceback.

Every case runs ``python -m cmkd.cli ...`` as a subprocess. The cases fail before any training, so they are
run concurrently by one module-scoped fixture; only one tiny real run is made (for the no-overwrite check).
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from helpers import cli_main, make_arrays, make_config, write_case

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def cli(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess:
    """Run ``python -m cmkd.cli ARGS`` and capture its output."""
    return subprocess.run([sys.executable, "-m", "cmkd.cli", *map(str, args)], cwd=cwd, env=ENV,
                          capture_output=True, text=True, timeout=300)


def _exp(d: Path, arrays: Callable[[dict], None] | None = None,
         config: Callable[[dict], None] | None = None) -> Path:
    """Write the tiny synthetic case into ``d`` after applying in-place edits to its arrays and config."""
    a, c = make_arrays(), make_config(epochs=1)
    if arrays:
        arrays(a)
    if config:
        config(c)
    return write_case(d, a, c)


# ---- the cases: each builds its files in a folder, returns (CLI arguments, words the error must name) ----

Case = Callable[[Path], tuple[list, list[str]]]
CASES: dict[str, Case] = {}


def case(fn: Case) -> Case:
    CASES[fn.__name__] = fn
    return fn


def run_args(p: Path, *extra: str) -> list:
    return ["run", p, "--out", p.parent / "out", "--quiet", *extra]


@case
def missing_npz(d: Path):
    return run_args(_exp(d, config=lambda c: c["data"].update(path="nothere.npz"))), ["nothere.npz"]


@case
def missing_yaml(d: Path):
    d.mkdir(parents=True)
    return run_args(d / "nothere.yaml"), ["nothere.yaml"]


@case
def invalid_yaml(d: Path):
    p = _exp(d)
    p.write_text("name: [unclosed\nseed: 0\n")
    return run_args(p), ["exp.yaml", "YAML"]


@case
def unknown_key_top(d: Path):
    return run_args(_exp(d, config=lambda c: c.update(colour="red"))), ["exp.yaml", "'colour'"]


@case
def unknown_key_nested(d: Path):
    return run_args(_exp(d, config=lambda c: c["student"].update(foo=1))), ["exp.yaml", "student.foo"]


@case
def wrong_shape_for_kind(d: Path):
    def flat(a: dict) -> None:
        a["img"] = a["img"].reshape(len(a["img"]), -1)  # image given 2-D

    return run_args(_exp(d, arrays=flat)), ["data.npz", "'img'", "image"]


@case
def modality_absent_from_npz(d: Path):
    return run_args(_exp(d, arrays=lambda a: a.pop("img"))), ["data.npz", "'img'"]


@case
def modality_not_declared(d: Path):
    return (run_args(_exp(d, config=lambda c: c["data"]["modalities"].pop("img"))),
            ["exp.yaml", "'img'", "data.modalities"])


@case
def nan_only_modality(d: Path):
    return run_args(_exp(d, arrays=lambda a: a["img"].fill(np.nan))), ["data.npz", "'img'"]


@case
def nan_only_feature_column(d: Path):
    def dead(a: dict) -> None:
        a["vec"][:, 3] = np.nan

    return run_args(_exp(d, arrays=dead)), ["data.npz", "'vec'", "3"]


@case
def one_class_in_training(d: Path):
    def one(a: dict) -> None:
        a["y"][a["split"] == 0] = 0

    return run_args(_exp(d, arrays=one)), ["data.npz", "'y'", "one class"]


@case
def label_in_test_absent_from_training(d: Path):
    def unseen(a: dict) -> None:
        a["y"][np.flatnonzero(a["split"] == 2)[:2]] = 9

    return run_args(_exp(d, arrays=unseen)), ["data.npz", "'y'", "9"]


@case
def empty_test_split(d: Path):
    def no_test(a: dict) -> None:
        a["split"][a["split"] == 2] = 1

    return run_args(_exp(d, arrays=no_test)), ["data.npz", "test split"]


@case
def corrupt_npz(d: Path):
    p = _exp(d)
    (d / "data.npz").write_bytes(np.random.default_rng(0).bytes(4096))
    return run_args(p), ["data.npz"]


@case
def npz_with_object_arrays(d: Path):
    def objects(a: dict) -> None:
        a["txt"] = np.array([{"words": str(t)} for t in a["txt"]], dtype=object)  # pickled on save

    return run_args(_exp(d, arrays=objects)), ["data.npz", "object"]


@case
def set_unknown_key(d: Path):
    return run_args(_exp(d), "--set", "student.nosuch=1"), ["student.nosuch"]


@case
def set_without_equals(d: Path):
    return run_args(_exp(d), "--set", "student.epochs"), ["--set", "student.epochs"]


@case
def unknown_recipe(d: Path):
    d.mkdir(parents=True)
    return ["run", "nosuchrecipe", "--out", d / "out", "--quiet"], ["nosuchrecipe"]


@case
def out_not_writable(d: Path):
    p = _exp(d)
    (d / "afile").write_text("a regular file where a folder is needed\n")
    return ["run", p, "--out", d / "afile" / "sub", "--quiet"], ["afile"]


@case
def presence_mask_not_boolean(d: Path):
    def edit(a: dict) -> None:
        a["img__present"] = np.full(len(a["y"]), 0.5)
    return run_args(_exp(d, arrays=edit)), ["img__present"]


@case
def unknown_device(d: Path):
    return run_args(_exp(d), "--device", "tpu"), ["tpu"]


@case
def tune_out_not_writable(d: Path):
    # refused before any trial is trained
    p = _exp(d)
    (d / "afile").write_text("a regular file where a folder is needed\n")
    return ["tune", p, "--trials", "2", "--out", d / "afile" / "sub", "--quiet"], ["afile"]


@case
def data_out_folder_missing(d: Path):
    d.mkdir(parents=True)
    return ["data", "minerals", "--out", d / "nothere" / "x.npz"], ["nothere"]


# ---- hostile inputs (a second round): each of these gave a traceback, a hang or a silent wrong result ----

def _npz_with_header(path: Path, key: str, shape: tuple, arrays: dict) -> None:
    """``arrays`` saved as an npz plus a member ``key`` whose .npy header claims ``shape`` (float64) but holds
    16 bytes."""
    import io
    import zipfile

    np.savez(path, **arrays)
    buf = io.BytesIO()  # the header writer writes the magic string too
    np.lib.format.write_array_header_1_0(buf, {"descr": "<f8", "fortran_order": False, "shape": shape})
    buf.write(b"\0" * 16)
    with zipfile.ZipFile(path, "a") as z:
        z.writestr(f"{key}.npy", buf.getvalue())


@case
def npz_header_claims_huge_shape(d: Path):
    p = _exp(d)
    a = make_arrays()
    a.pop("vec")
    _npz_with_header(d / "data.npz", "vec", (10**12,), a)
    return run_args(p), ["data.npz", "'vec'", "GiB", "CMKD_MAX_ARRAY_BYTES"]


@case
def fifo_as_shard_file(d: Path):
    from cmkd.data.shards import write_shards

    a, c = make_arrays(), make_config(epochs=1)
    c["data"]["path"] = "shards"
    p = write_case(d, a, c)
    for i, part in enumerate(np.array_split(np.arange(len(a["y"])), 2)):
        write_shards(d / "shards", {k: v[part] for k, v in a.items()}, i)
    label = d / "shards" / "shard_00001" / "y.npy"
    label.unlink()
    os.mkfifo(label)
    return run_args(p), ["y.npy", "not a regular file"]


def _regression_case(d: Path, value: float, dtype: type) -> Path:
    a, c = make_arrays(task="regression"), make_config(task="regression", epochs=1)
    y = a["y"].astype(dtype)
    y[5] = value
    a["y"] = y
    return write_case(d, a, c)


@case
def regression_target_inf(d: Path):
    return run_args(_regression_case(d, np.inf, np.float32)), ["data.npz", "'y'", "inf", "sample 5"]


@case
def regression_target_1e300(d: Path):
    return run_args(_regression_case(d, 1e300, np.float64)), ["data.npz", "'y'", "1e+300"]


@case
def regression_target_3e38(d: Path):
    return run_args(_regression_case(d, 3e38, np.float32)), ["data.npz", "'y'", "3e+38"]


@case
def seed_negative(d: Path):
    return run_args(_exp(d), "--set", "seed=-5"), ["'seed'", "0"]


@case
def seed_too_large(d: Path):
    return run_args(_exp(d), "--set", "seed=1e20"), ["'seed'"]


def _renamed(d: Path, new: str) -> Path:
    def arrays(a: dict) -> None:
        a[new] = a.pop("vec")

    def config(c: dict) -> None:
        c["data"]["modalities"][new] = c["data"]["modalities"].pop("vec")
        c["teacher"]["modalities"] = [new, "img"]

    return _exp(d, arrays=arrays, config=config)


@case
def modality_name_with_dot(d: Path):
    return run_args(_renamed(d, "a.b")), ["exp.yaml", "data.modalities", "'a.b'"]


@case
def modality_name_empty(d: Path):
    return run_args(_renamed(d, "")), ["exp.yaml", "data.modalities", "''"]


@case
def adapt_lr_nan(d: Path):
    (d / "model").mkdir(parents=True)
    np.savez(d / "data.npz", **make_arrays(n=40))
    return ["adapt", "--model", d / "model", "--data", d / "data.npz", "--lr", "nan"], ["--lr", "nan"]


@case
def yaml_alias_bomb(d: Path):
    p = _exp(d)
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [*a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, "
              f"*a{i - 1}, *a{i - 1}, *a{i - 1}]" for i in range(1, 9)]
    text = p.read_text() + "options:\n" + "".join(f"  {line}\n" for line in lines)
    p.write_text(text)
    return run_args(p), ["exp.yaml", "100000 values", "aliases"]


@case
def yaml_too_large(d: Path):
    p = _exp(d)
    p.write_text(p.read_text() + "# " + "x" * (1 << 20) + "\n")
    return run_args(p), ["exp.yaml", "bytes"]


@case
def too_many_classes(d: Path):
    n = 30000

    def arrays(a: dict) -> None:
        a.update(make_arrays(n=n))
        a["y"] = np.arange(n) % 10000  # every class once in train, val and test
        a["split"] = (np.arange(n) // 10000).astype(np.int64)

    return run_args(_exp(d, arrays=arrays)), ["data.npz", "'y'", "10000 classes", "data.max_classes"]


@case
def duplicated_yaml_key(d: Path):
    p = _exp(d)
    p.write_text(p.read_text() + "student: {modalities: [vec]}\n")
    return run_args(p), ["exp.yaml", "duplicated key 'student'"]


@case
def class_id_inf(d: Path):
    def inf(a: dict) -> None:
        a["y"] = a["y"].astype(np.float64)
        a["y"][7] = np.inf

    return run_args(_exp(d, arrays=inf)), ["data.npz", "'y'", "inf", "sample 7"]


@case
def resume_with_changed_config(d: Path):
    # an interrupted run's checkpoints and the config they belong to; resuming with another seed is refused
    from cmkd.config import dump_config, load_config

    p = _exp(d)
    ck = d / "out" / ".ckpt"
    ck.mkdir(parents=True)
    (d / "out" / ".cmkd-run").write_text("a cmkd run folder\n")
    (ck / "config.yaml").write_text(dump_config(load_config(p)))
    return run_args(p, "--resume", "--set", "seed=7"), ["--resume", "seed"]


HELD_LOCKS: list[int] = []  # lock files this test process holds for the duration of the module


@case
def lock_held_by_another_run(d: Path):
    import fcntl

    p = _exp(d)
    (d / "out").mkdir()
    fd = os.open(d / ".out.cmkd-lock", os.O_RDWR | os.O_CREAT)  # beside the folder, which the run replaces
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # as a running `cmkd run` into the same --out does
    HELD_LOCKS.append(fd)
    return run_args(p), ["out", "in use by another cmkd run", ".out.cmkd-lock"]


# ---- bad checkpoints given to predict / evaluate / export ----

MARKER = "PWNED"


class Evil:
    """Unpickling this runs a shell command that creates a marker file (the attack to refuse)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # noqa: ANN204
        return os.system, (f"touch '{self.marker}'",)


def _checkpoint(d: Path, how: str) -> Path:
    """A model folder whose student.pt is truncated or malicious, plus a dummy student.onnx and good data."""
    import torch

    model = d / "model"
    model.mkdir(parents=True)
    (model / "student.onnx").write_bytes(b"dummy, never read: student.pt is read first")
    np.savez(d / "data.npz", **make_arrays(n=40))
    ck = model / "student.pt"
    if how == "truncated":
        torch.save({"format": "cmkd-model-1", "state_dict": {"w": torch.randn(64, 64)}}, ck)
        ck.write_bytes(ck.read_bytes()[: ck.stat().st_size // 2])
    elif how == "malicious":  # torch's own zip format, pickle inside
        torch.save({"format": "cmkd-model-1", "payload": Evil(d / MARKER)}, ck)
    else:  # a bare pickle
        ck.write_bytes(pickle.dumps({"format": "cmkd-model-1", "payload": Evil(d / MARKER)}))
    return model


def _ckpt_case(command: str, how: str) -> Case:
    def build(d: Path):
        model = _checkpoint(d, how)
        extra = {"predict": ["--input", d / "data.npz", "--output", d / "preds.json"],
                 "evaluate": ["--data", d / "data.npz"], "export": []}[command]
        if command == "predict":  # predict reads the ONNX file's sidecar, never student.pt (cmkd.runtime)
            if how == "truncated":
                (model / "student.json").write_text('{"format": "cmkd-edge-model", "format_ver')
            return [command, "--model", model, *extra], ["student.json"]
        return [command, "--model", model, *extra], ["student.pt"]

    build.__name__ = f"{how}_checkpoint_{command}"
    return build


for _cmd, _how in [("predict", "truncated"), ("evaluate", "truncated"), ("export", "truncated"),
                   ("predict", "malicious"), ("evaluate", "malicious"), ("export", "pickle")]:
    case(_ckpt_case(_cmd, _how))


# ---- one tiny real run, then failing runs into the same folder ----

def _snapshot(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}


def good_then_failing(d: Path) -> dict:
    """A good tiny run into OUT, then a config mistake and a data mistake into the same OUT."""
    p = _exp(d / "good")
    out = d / "good" / "OUT"
    good = cli("run", p, "--out", out, "--quick", "--quiet", "--set", "export.latency_runs=5", cwd=d)
    before = _snapshot(out) if out.is_dir() else {}
    bad_cfg = _exp(d / "bad_config", config=lambda c: c["teacher"].update(nosuch=1))

    def unseen(a: dict) -> None:
        a["y"][np.flatnonzero(a["split"] == 2)[:2]] = 9

    bad_data = _exp(d / "bad_data", arrays=unseen)
    # --overwrite: the earlier run's outputs may be replaced, but only by a run that succeeds
    failed = [cli("run", y, "--out", out, "--quick", "--quiet", "--overwrite", cwd=d) for y in (bad_cfg, bad_data)]
    # what killed runs leave (the next run cleans it), then a run that fails in training (the loss diverges)
    (out / ".metrics.json.k3x9_q2a").write_text("half")
    (out / ".student.pt.tmp4242").write_bytes(b"half")
    (out / ".staging-4242").mkdir()
    (out / ".staging-4242" / "student.onnx").write_bytes(b"half")
    failed.append(cli("run", p, "--out", out, "--quiet", "--overwrite", "--set", "teacher.lr=1e9",
                      "--set", "teacher.epochs=30", cwd=d))
    return {"good": good, "out": out, "before": before, "failed": failed, "after": _snapshot(out),
            "entries": sorted(p.name for p in out.iterdir()), "uses": _uses_of_a_run(d, out)}


def _uses_of_a_run(d: Path, out: Path) -> dict:
    """predict / evaluate given inputs that do not fit the good run's model."""
    other = d / "other_model"
    other.mkdir()
    shutil.copy(out / "student.onnx", other / "student.onnx")  # a valid ONNX whose sidecar is another model's
    card = json.loads((out / "student.json").read_text())
    card["inputs"] = [{**card["inputs"][0], "name": "vec", "shape": [6]}]
    (other / "student.json").write_text(json.dumps(card))
    a = make_arrays(n=40)
    np.savez(d / "vec.npz", vec=a["vec"])
    np.savez(d / "zero.npz", img=a["img"][:0])
    np.savez(d / "inf.npz", img=np.where(np.arange(40)[:, None, None, None] < 2, np.inf, a["img"]))
    np.savez(d / "labels_n1.npz", **{**a, "y": a["y"][:, None]})
    pred = ["--output", d / "preds.json"]
    return {"other_onnx": (cli("predict", "--model", other, "--input", d / "vec.npz", *pred, cwd=d),
                           ["student.onnx", "does not match", "student.json"]),
            "zero_samples": (cli("predict", "--model", out, "--input", d / "zero.npz", *pred, cwd=d),
                             ["zero.npz", "0 samples"]),
            "inf_inputs": (cli("predict", "--model", out, "--input", d / "inf.npz", *pred, cwd=d),
                           ["inf.npz", "'img'", "infinite"]),
            "labels_n1": (cli("evaluate", "--model", out, "--data", d / "labels_n1.npz", cwd=d),
                          ["labels_n1.npz", "'y'", "(40, 1)"])}


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Build every case and run them all concurrently (the good run first: it takes longest)."""
    root = tmp_path_factory.mktemp("bad_inputs")
    with ThreadPoolExecutor(max_workers=3) as pool:
        chain = pool.submit(good_then_failing, root / "overwrite")
        futures = {}
        for name, build in CASES.items():
            args, names = build(root / name)
            futures[name] = (pool.submit(cli, *args, cwd=root / name), names)
        results = {name: (f.result(), names) for name, (f, names) in futures.items()}
        results["__chain__"] = chain.result()
    results["__root__"] = root
    return results


def test_enough_cases() -> None:
    assert len(CASES) >= 14


def assert_user_error(proc: subprocess.CompletedProcess, names: list[str]) -> None:
    """Exit code 2; stderr is exactly one non-empty ``error: ...`` line naming every word in ``names``."""
    err = proc.stderr
    assert "Traceback" not in err + proc.stdout, err
    assert proc.returncode == 2, f"exit code {proc.returncode}; stderr:\n{err}"
    lines = err.splitlines()
    assert len(lines) == 1 and err == lines[0] + "\n", f"stderr is not exactly one line:\n{err}"
    line = lines[0]
    assert line.startswith("error: ") and line[len("error: "):].strip(), line
    for word in names:
        assert word in line, f"{word!r} not named in: {line}"


@pytest.mark.slow  # one module fixture runs ~55 CLI subprocesses (811 s under load)
@pytest.mark.parametrize("name", list(CASES))
def test_bad_input(outcomes: dict, name: str) -> None:
    assert_user_error(*outcomes[name])


@pytest.mark.slow  # one module fixture runs ~55 CLI subprocesses (811 s under load)
def test_malicious_checkpoint_never_runs_code(outcomes: dict) -> None:
    root = outcomes["__root__"]
    ran = list(root.rglob(MARKER))
    assert not ran, f"unpickling a checkpoint ran code: {ran}"
    # the refusal must come from the loader, not from a missing file
    for name in CASES:
        if "checkpoint" in name and not name.endswith("_predict"):  # predict reads no checkpoint (the sidecar)
            assert "not a valid cmkd checkpoint" in outcomes[name][0].stderr, outcomes[name][0].stderr


@pytest.mark.slow  # one module fixture runs ~55 CLI subprocesses (811 s under load)
def test_failed_run_keeps_earlier_outputs(outcomes: dict) -> None:
    res = outcomes["__chain__"]
    assert res["good"].returncode == 0, res["good"].stderr
    assert "metrics.json" in res["before"]
    assert_user_error(res["failed"][0], ["teacher.nosuch"])
    assert_user_error(res["failed"][1], ["data.npz", "'y'"])
    assert res["after"]["metrics.json"] == res["before"]["metrics.json"]
    changed = sorted(k for k in res["before"] if res["after"].get(k) != res["before"][k])
    assert not changed, f"a failed run rewrote earlier outputs: {changed}"
    assert_user_error(res["failed"][2], ["teacher", "loss became"])
    hidden = [e for e in res["entries"] if e.startswith(".") and e != ".cmkd-run"]
    assert not hidden, f"temporary files or checkpoints left in {res['out']}: {hidden}"
    # the earlier run is still usable: its metrics parse and name the three models
    metrics = json.loads(res["after"]["metrics.json"])
    assert {"teacher", "student_baseline", "student"} <= set(metrics["models"]) <= {
        "teacher", "student_baseline", "student", "student_trees"}


@pytest.mark.slow  # one module fixture runs ~55 CLI subprocesses (811 s under load)
@pytest.mark.parametrize("use", ["other_onnx", "zero_samples", "inf_inputs", "labels_n1"])
def test_model_given_unfit_inputs(outcomes: dict, use: str) -> None:
    assert_user_error(*outcomes["__chain__"]["uses"][use])


def test_predict_refuses_outputs_that_are_not_finite() -> None:
    from cmkd.errors import CmkdError
    from cmkd.runtime import check_outputs

    check_outputs({"y/value": np.zeros((3, 2))}, "x.npz")
    with pytest.raises(CmkdError, match="not finite for 1 sample"):
        check_outputs({"y/value": np.array([[0.0], [np.nan], [1.0]])}, "x.npz")


# ---- in-process cases: a split that copes, a full disk, signals, the coastal CSV ----

def test_automatic_split_copes_with_many_small_classes() -> None:
    """40 classes x 3 samples: every class keeps a sample in train, validation and test (a stratified split by
    fraction cannot: its test part holds 24 samples)."""
    from cmkd.config import validate
    from cmkd.data.arrays import build_data

    n = 120
    a = {"vec": np.random.default_rng(0).normal(size=(n, 4)).astype(np.float32), "y": np.arange(n) % 40}
    cfg = validate({"data": {"modalities": {"vec": {"kind": "vector"}}, "targets": {"y": {"kind": "classification"}},
                             "split": None},
                    "teacher": {"modalities": ["vec"]}, "student": {"modalities": ["vec"]}})
    data = build_data(a, cfg.data, seed=0)
    for part in (0, 1, 2):
        assert len(np.unique(data.targets["y"][data.split == part])) == 40, part



def _main(argv: list, capsys: pytest.CaptureFixture) -> tuple[int, str]:
    return cli_main(argv, capsys)


def test_disk_full_during_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                     capsys: pytest.CaptureFixture) -> None:
    """ENOSPC while the per-epoch checkpoint is written: one line naming the folder; --out left as it was."""
    import errno

    import torch

    def full(obj: object, f: object, *a: object, **k: object) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(torch, "save", full)
    p = _exp(tmp_path)
    out = tmp_path / "out"
    code, err = _main(["run", p, "--out", out, "--quiet"], capsys)
    lines = err.splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), err
    assert str(out / ".ckpt") in lines[0] and "No space left on device" in lines[0], err
    assert not out.exists(), sorted(q.name for q in out.iterdir())


@pytest.mark.slow  # two CLI runs interrupted by signals (18 s)
def test_signals_say_how_to_resume(tmp_path: Path) -> None:
    """SIGINT and SIGTERM during `cmkd run`: exit 130 / 143, one line saying how to resume, checkpoints kept."""
    import signal
    import time

    c = make_config(epochs=2000)
    c["teacher"]["patience"] = 5000
    procs = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        p = write_case(tmp_path / sig.name, config=c)
        procs[sig] = (subprocess.Popen([sys.executable, "-m", "cmkd.cli", *map(str, run_args(p))], env=ENV,
                                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True),
                      p.parent / "out")
    deadline = time.monotonic() + 240
    for sig, (proc, out) in procs.items():
        while not (out / ".ckpt" / "teacher.pt").exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        proc.send_signal(sig)
    for sig, (proc, out) in procs.items():
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 128 + sig, (sig, proc.returncode, err)
        lines = err.splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"error: interrupted by {sig.name}"), err
        assert "--resume" in lines[0] and str(out) in lines[0], err
        assert (out / ".ckpt" / "teacher.pt").is_file()
        assert not [q.name for q in out.iterdir() if q.name not in (".ckpt", ".cmkd-run")], sorted(out.iterdir())


@pytest.mark.parametrize("edit,words", [
    ("station_name", ["station 'A'", "row 3", "integer"]),
    ("station_nan", ["station", "row 4", "integer"]),
    ("mixed_zones", ["time", "one time zone"]),
    ("reading_inf", ["inf", "'pressure'", "row 2"]),
    ("reading_huge", ["1e+30", "'pressure'", "row 2"]),
])
def test_coastal_csv_refused(tmp_path: Path, edit: str, words: list[str]) -> None:
    """Gauge CSVs a careless export produces: one line each (read_csv is where the CSV enters)."""
    pd = pytest.importorskip("pandas")
    from cmkd.errors import CmkdError
    from cmkd.recipes.coastal.forecast import EPOCH, read_csv
    from cmkd.recipes.coastal.scene import CHANNELS

    n = 8
    df = pd.DataFrame(np.ones((n, len(CHANNELS))), columns=list(CHANNELS))
    df.insert(0, "station", 0)
    df.insert(0, "time", [str(EPOCH + np.timedelta64(i, "h")) for i in range(n)])
    df = df.astype({"station": object, "time": object, "pressure": object})
    if edit == "station_name":
        df.loc[2, "station"] = "A"
    elif edit == "station_nan":
        df.loc[3, "station"] = np.nan
    elif edit == "mixed_zones":
        df.loc[0, "time"] = "2025-01-01T00:00:00+00:00"
        df.loc[1, "time"] = "2025-01-01T01:00:00+02:00"
    else:
        df.loc[1, "pressure"] = "inf" if edit == "reading_inf" else 1e30
    src = tmp_path / "r.csv"
    df.to_csv(src, index=False)
    with pytest.raises(CmkdError) as e:
        read_csv(src, CHANNELS)
    msg = str(e.value)
    assert "\n" not in msg and all(w in msg for w in words), msg


def test_no_risk_class_for_a_forecast_that_is_not_finite() -> None:
    """Safety: a NaN or infinite forecast never becomes "low / no action"."""
    from cmkd.recipes.coastal import decisions

    assert decisions.risk_class(0.1, 0.0, 0.2, 0.01, 1.0) == "low"
    for mu, lo, hi, p in [(np.nan, 0.0, 0.2, 0.0), (0.1, -np.inf, 0.2, 0.0), (0.1, 0.0, np.nan, np.nan)]:
        with pytest.raises(ValueError, match="not finite"):
            decisions.risk_class(mu, lo, hi, p, 1.0)


def test_report_of_many_classes_is_quick() -> None:
    """1000 classes (the default data.max_classes): a table of the most frequent confusions, no matrix; 60: a matrix
    without per-class labels."""
    import time

    from cmkd.evaluation.figures import confusion_html

    rng = np.random.default_rng(0)
    y = rng.integers(0, 1000, 5000)
    t0 = time.monotonic()
    html = confusion_html("student", {"y_true": y, "y_pred": rng.permutation(y)})
    assert "most frequent confusions" in html and "<img" not in html and time.monotonic() - t0 < 30
    small = confusion_html("student", {"y_true": y % 60, "y_pred": rng.permutation(y % 60)})
    assert "<img" in small


def test_npz_of_an_unknown_zip_version(tmp_path: Path) -> None:
    """A damaged zip whose central directory asks for zip version 22.5 (zipfile raises NotImplementedError): one
    line (found by benchmarks/fuzz_inputs.py)."""
    from cmkd.errors import CmkdError
    from cmkd.runtime import load_npz

    p = tmp_path / "data.npz"
    np.savez(p, x=np.zeros(3))
    raw = bytearray(p.read_bytes())
    at = raw.index(b"PK\x01\x02")
    raw[at + 6:at + 8] = (225).to_bytes(2, "little")
    p.write_bytes(bytes(raw))
    with pytest.raises(CmkdError, match="not a readable .npz file"):
        load_npz(p)


def test_input_beyond_float32(tmp_path: Path) -> None:
    """A float64 input of 1e300: one line naming the value, no RuntimeWarning from the cast (fuzz-found)."""
    import warnings

    from cmkd.config import validate
    from cmkd.data.arrays import build_data
    from cmkd.errors import CmkdError

    a = {"vec": np.ones((20, 2)), "y": np.arange(20) % 2}
    a["vec"][3, 1] = 1e300
    cfg = validate({"data": {"modalities": {"vec": {"kind": "vector"}}, "targets": {"y": {"kind": "classification"}},
                             "split": None},
                    "teacher": {"modalities": ["vec"]}, "student": {"modalities": ["vec"]}})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(CmkdError, match="'vec' holds 1e\\+300"):
            build_data(a, cfg.data)
