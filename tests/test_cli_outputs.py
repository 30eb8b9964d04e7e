"""Every command that writes goes by the run-folder rules (:mod:`cmkd.pipeline.rundir`), and a checkpoint's stored
config goes through the one YAML door.

* Output folders (``cmkd tune``, ``select``, ``adapt``, ``habitat example``): a folder of the user's own or of
  another command is refused in one line, even with ``--overwrite``; the command's earlier outputs are replaced
  only with ``--overwrite``, in one swap; a failure leaves the folder as it was.
* Output files (``cmkd data build --out``, ``predict --output``, ``habitat design --output``): an existing file is
  replaced only with ``--overwrite``; a folder never.
* A corrupt or hostile config stored in a checkpoint is one ``error:`` line.

Each case hashes the user's folder before and after. The long work (the trials, the trainings, the fine-tuning) is
stubbed: the folder logic under test is the real one.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from helpers import cli_main, make_arrays, make_config, write_case

from cmkd.errors import CmkdError
from cmkd.pipeline import rundir

# stand-in run folders hold a placeholder metrics.json: not a run's, so not checked against its schema
pytestmark = pytest.mark.fake_metrics


def _hash(folder: Path) -> dict[str, str] | None:
    """Every entry under ``folder`` (files by their sha256), None when it does not exist."""
    if not folder.exists():
        return None
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "<dir>"
            for p in sorted(folder.rglob("*"))}


def _refused(code: int, err: str, *words: str) -> str:
    lines = err.splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), (code, err)
    for w in words:
        assert w in lines[0], (w, err)
    return lines[0]


def _hidden_siblings(out: Path) -> list[str]:
    return sorted(p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}."))


def _user_folder(d: Path) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    (d / "config.yaml").write_text("# my settings\nlr: 0.1\n")
    (d / "trials.json").write_text('{"mine": true}')  # a name the command writes too
    (d / "logs").mkdir(exist_ok=True)
    (d / "logs" / "notes.txt").write_text("do not lose me\n")
    return d


# ---- the output-folder commands, their long work stubbed ----

def _stub_resolve(monkeypatch: pytest.MonkeyPatch) -> None:
    import cmkd.pipeline.resolve as resolve

    monkeypatch.setattr(resolve, "resolve", lambda target, overrides=None, quick=False: ({"seed": 0}, {}, None, True))


def _tune(monkeypatch: pytest.MonkeyPatch, tmp: Path, fail: bool) -> list:
    import cmkd.pipeline.tune as tune

    _stub_resolve(monkeypatch)

    def fake(cfg, arrays, trials, sampler, out, quiet=True):  # noqa: ANN001, ANN202
        (out / "trials.json").write_text(json.dumps({"trials": trials}))
        if fail:
            raise CmkdError("a trial failed")
        (out / "best.yaml").write_text(f"trials: {trials}\n")
        return {"trials": [{"trial": 0, "loss": 1.0, "params": {}}], "metric": "loss", "default": 1.0, "best": 1.0,
                "best_params": {}}

    monkeypatch.setattr(tune, "tune", fake)
    return ["tune", "minerals", "--trials", "3", "--quiet"]


def _select(monkeypatch: pytest.MonkeyPatch, tmp: Path, fail: bool) -> list:
    import cmkd.pipeline.select as select

    _stub_resolve(monkeypatch)

    def fake(cfg, arrays, budget, cands, out, quiet=True):  # noqa: ANN001, ANN202
        (out / "select.json").write_text(json.dumps({"budget": budget}))
        if fail:
            raise CmkdError("a training failed")
        (out / "pareto.png").write_bytes(b"png")
        best = {"modalities": ["a"], "cost": 1.0, "val_accuracy": 0.5}
        return {"metric": "accuracy", "search": "exhaustive", "subsets": [best], "pareto_front": [best],
                "best_within_budget": best}

    monkeypatch.setattr(select, "select", fake)
    return ["select", "minerals", "--budget", "3", "--quiet"]


def _adapt(monkeypatch: pytest.MonkeyPatch, tmp: Path, fail: bool) -> list:
    import cmkd.data.arrays as arrays
    import cmkd.nn.checkpoint as checkpoint
    import cmkd.pipeline.resolve as resolve
    import cmkd.training.continual as continual

    model = tmp / "model"
    model.mkdir(exist_ok=True)
    np.savez(tmp / "site.npz", a=np.zeros((4, 2)))
    monkeypatch.setattr(checkpoint, "load_model", lambda p: (None, {"hparams": {}}))
    monkeypatch.setattr(continual, "model_dataset", lambda meta, arr, src, split="all": None)
    monkeypatch.setattr(resolve, "original_dataset", lambda meta: None)
    monkeypatch.setattr(arrays, "load_npz", lambda p: {})

    def fake(net, new, shots, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        if fail:
            raise CmkdError("fine-tuning failed")
        return None, {"before": {"new_site": {"accuracy": 0.1}}, "after": {"new_site": {"accuracy": 0.2}},
                      "shots": shots}

    monkeypatch.setattr(continual, "adapt", fake)
    monkeypatch.setattr(continual, "save_adapted", lambda m, meta, rep, path: Path(path).write_bytes(b"pt"))
    return ["adapt", "--model", model, "--data", tmp / "site.npz", "--shots", "2"]


def _example(monkeypatch: pytest.MonkeyPatch, tmp: Path, fail: bool) -> list:
    import cmkd.recipes.habitat.cli as hcli
    from cmkd.recipes.habitat.design import example

    def broken(out: Path, seed: int = 0) -> list:
        (out / "survey.npy").write_bytes(b"half")
        raise CmkdError("cannot draw the site")

    monkeypatch.setattr(hcli, "example", broken if fail else example)
    return ["habitat", "example", "--seed", "1"]


COMMANDS = {"tune": (_tune, "trials.json"), "select": (_select, "select.json"), "adapt": (_adapt, "adapt.json"),
            "habitat example": (_example, "spec.json")}


@pytest.fixture(params=list(COMMANDS))
def command(request: pytest.FixtureRequest) -> str:
    return request.param


def _call(command: str, monkeypatch: pytest.MonkeyPatch, tmp: Path, out: Path, capsys: pytest.CaptureFixture,
          *extra: str, fail: bool = False) -> tuple[int, str]:
    argv = COMMANDS[command][0](monkeypatch, tmp, fail)
    return cli_main([*argv, "--out", out, *extra], capsys)


@pytest.mark.parametrize("flags", [[], ["--overwrite"]])
def test_user_folder_refused_untouched(command: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                       capsys: pytest.CaptureFixture, flags: list[str]) -> None:
    user = _user_folder(tmp_path / "mine")
    before = _hash(user)
    code, err = _call(command, monkeypatch, tmp_path, user, capsys, *flags)
    _refused(code, err, "not a cmkd output folder", rundir.MARKER)
    assert _hash(user) == before and _hidden_siblings(user) == []


def test_outputs_written_kept_and_replaced(command: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "out"
    code, err = _call(command, monkeypatch, tmp_path, out, capsys)
    assert code == 0, err
    key = COMMANDS[command][1]
    assert (out / rundir.MARKER).is_file() and (out / key).is_file()
    assert f"`cmkd {command}`" in (out / rundir.MARKER).read_text()
    before = _hash(out)
    code, err = _call(command, monkeypatch, tmp_path, out, capsys)  # the earlier outputs: only with --overwrite
    _refused(code, err, "--overwrite", key)
    assert _hash(out) == before
    (out / "stale.txt").write_text("an earlier output the new one does not write")  # inside cmkd's own folder
    code, err = _call(command, monkeypatch, tmp_path, out, capsys, "--overwrite")
    assert code == 0, err
    assert not (out / "stale.txt").exists() and (out / key).is_file()  # the whole folder replaced, not merged
    assert _hidden_siblings(out) == []


def test_failure_leaves_the_folder_as_it_was(command: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "out"
    code, err = _call(command, monkeypatch, tmp_path, out, capsys, fail=True)
    _refused(code, err)
    assert not out.exists() and _hidden_siblings(out) == []  # a new folder: not created
    assert _call(command, monkeypatch, tmp_path, out, capsys)[0] == 0
    before = _hash(out)
    code, err = _call(command, monkeypatch, tmp_path, out, capsys, "--overwrite", fail=True)
    _refused(code, err)
    assert _hash(out) == before and _hidden_siblings(out) == []  # the earlier outputs, unchanged


def test_swap_failure_keeps_the_earlier_outputs(command: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "out"
    assert _call(command, monkeypatch, tmp_path, out, capsys)[0] == 0
    before = _hash(out)
    real_rename = rundir.os.rename

    def rename(src, dst):  # noqa: ANN001, ANN202 - the staged outputs cannot be moved in
        if ".staging-" in str(src):
            raise OSError(28, "No space left on device")
        return real_rename(src, dst)

    monkeypatch.setattr(rundir.os, "rename", rename)
    code, err = _call(command, monkeypatch, tmp_path, out, capsys, "--overwrite")
    _refused(code, err, "earlier run, unchanged")
    monkeypatch.setattr(rundir.os, "rename", real_rename)
    assert _hash(out) == before and _hidden_siblings(out) == []


def test_another_commands_folder_refused_even_with_overwrite(command: str, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch,
                                                             capsys: pytest.CaptureFixture) -> None:
    run = tmp_path / "run"  # a cmkd run folder: never replaced by tune's trials or adapt's model
    run.mkdir()
    (run / rundir.MARKER).write_text(rundir.MARKER_TEXT)
    (run / "metrics.json").write_text("{}")
    (run / "student.pt").write_bytes(b"weights")
    before = _hash(run)
    code, err = _call(command, monkeypatch, tmp_path, run, capsys, "--overwrite")
    _refused(code, err, "`cmkd run`", f"`cmkd {command}`")
    assert _hash(run) == before


def test_adapt_default_folder_inside_the_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture) -> None:
    """Without --out, adapt writes MODEL/adapt by the same rules; MODEL's other files are untouched."""
    argv = _adapt(monkeypatch, tmp_path, False)
    model = tmp_path / "model"
    (model / "student.pt").write_bytes(b"weights")
    assert cli_main(argv, capsys)[0] == 0
    assert sorted(p.name for p in (model / "adapt").iterdir()) == [rundir.MARKER, "adapt.json", "student_adapted.pt"]
    before = _hash(model)
    _refused(*cli_main(argv, capsys), "--overwrite")
    assert _hash(model) == before
    assert cli_main([*argv, "--overwrite"], capsys)[0] == 0
    assert sorted(p.name for p in model.iterdir()) == ["adapt", "student.pt"]


def test_older_tune_folder_accepted_only_alone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture) -> None:
    """A tune folder of a cmkd before the marker (trials.json and best.yaml only) is tune's: replaced with
    --overwrite; with a file of the user's beside them it is the user's."""
    out = tmp_path / "old"
    out.mkdir()
    (out / "trials.json").write_text("[]")
    (out / "best.yaml").write_text("seed: 0\n")
    before = _hash(out)
    _refused(*_call("tune", monkeypatch, tmp_path, out, capsys), "--overwrite", "earlier `cmkd tune`")
    assert _hash(out) == before
    (out / "notes.md").write_text("mine")
    before = _hash(out)
    _refused(*_call("tune", monkeypatch, tmp_path, out, capsys, "--overwrite"), "not a cmkd output folder")
    assert _hash(out) == before
    (out / "notes.md").unlink()
    assert _call("tune", monkeypatch, tmp_path, out, capsys, "--overwrite")[0] == 0
    assert (out / rundir.MARKER).is_file() and json.loads((out / "trials.json").read_text()) == {"trials": 3}


# ---- files the user names ----

def test_data_build_refuses_an_existing_file(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    exp = write_case(tmp_path / "case", make_arrays(n=40), make_config(epochs=1))
    mine = tmp_path / "mine.npz"
    mine.write_bytes(b"my own data")
    code, err = cli_main(["data", "build", exp, "--out", mine], capsys)
    _refused(code, err, "already exists", "--overwrite")
    assert mine.read_bytes() == b"my own data"
    folder = tmp_path / "x.npz"
    folder.mkdir()
    _refused(*cli_main(["data", "build", exp, "--out", folder, "--overwrite"], capsys), "is a folder")
    assert cli_main(["data", "build", exp, "--out", mine, "--overwrite"], capsys)[0] == 0
    assert set(np.load(mine)) >= {"vec", "y"}
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary file left


def test_predict_and_design_refuse_an_existing_file(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    model = tmp_path / "model"
    model.mkdir()
    mine = tmp_path / "preds.json"
    mine.write_text("my notes")
    code, err = cli_main(["predict", "--model", model, "--input", tmp_path / "in.npz", "--output", mine], capsys)
    _refused(code, err, "already exists", "--overwrite")
    code, err = cli_main(["habitat", "design", "--model", model, "--acoustic", "a.npy", "--legal", "l.txt",
                          "--sensor", "s.csv", "--structural", "s.json", "--output", mine], capsys)
    _refused(code, err, "already exists", "--overwrite")
    assert mine.read_text() == "my notes"


# ---- a checkpoint's stored config goes through the one YAML door ----

HOSTILE = {"alias bomb": "a: &a [" + ",".join(["x" * 1000] * 10) + "]\n" + "".join(
               f"b{i}: *a\n" for i in range(200)),
           "deep nesting": "data: " + "[" * 3000 + "]" * 3000,
           "huge integer": "seed: " + "9" * 5000,
           "not yaml": "data: {a: [1, 2\n",
           "python tag": "data: !!python/object/apply:os.system ['echo pwned']",
           "not a mapping": "- 1\n- 2\n",
           "data a list": "data: [1, 2]\n"}


@pytest.mark.parametrize("text", list(HOSTILE.values()), ids=list(HOSTILE))
def test_stored_config_one_line(text: str) -> None:
    from cmkd.export.sidecar import model_card
    from cmkd.pipeline.resolve import original_dataset
    from cmkd.training.continual import model_dataset, model_modalities
    from cmkd.validate import stored_config

    meta = {"config": text, "hparams": {"modalities": {"a": {"kind": "vector", "shape": [2]}},
                                        "targets": {"y": {"kind": "regression"}}}, "classes": {}}
    for call in (lambda: stored_config(meta, "m.pt"), lambda: model_modalities(meta), lambda: original_dataset(meta),
                 lambda: model_card(meta), lambda: model_dataset(meta, {"a": np.zeros((3, 2)), "y": np.zeros(3)}, "x")):
        with pytest.raises(CmkdError) as e:
            call()
        assert "\n" not in str(e.value) and "stored config" in str(e.value)
    for bad in (3, b"data: {}", ["data"]):
        with pytest.raises(CmkdError, match="not YAML text"):
            stored_config({"config": bad}, "m.pt")
    assert stored_config({}, "m") == {} and stored_config({"config": "data: {split: s}"}, "m")["data"]["split"] == "s"


def test_adapt_with_a_hostile_stored_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture) -> None:
    """Through the CLI: one error line, and the output folder is not created."""
    import cmkd.data.arrays as arrays
    import cmkd.nn.checkpoint as checkpoint

    model = tmp_path / "model"
    model.mkdir()
    meta = {"config": HOSTILE["alias bomb"], "hparams": {"modalities": {"a": {"kind": "vector", "shape": [2]}},
                                                          "targets": {}}, "classes": {}}
    monkeypatch.setattr(checkpoint, "load_model", lambda p: (None, meta))
    monkeypatch.setattr(arrays, "load_npz", lambda p: {"a": np.zeros((3, 2))})
    before = _hash(tmp_path)
    code, err = cli_main(["adapt", "--model", model, "--data", tmp_path / "site.npz"], capsys)
    _refused(code, err, "stored config")
    assert _hash(tmp_path) == before
