"""The self-describing edge model (ONNX + sidecar) and the torch-free runtime, on one tiny SYNTHETIC run with a
regression and a classification target and two student modalities."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import jsonschema
import numpy as np
import onnx
import pytest
from helpers import make_arrays, make_config, write_case

import cmkd
from cmkd.export.sidecar import schema
from cmkd.runtime import EdgeModel, sha256
from cmkd.training.continual import model_inputs
from cmkd.training.fit import safe_load

ROOT = Path(__file__).resolve().parents[1]


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cmkd.cli", *args], capture_output=True, text=True, timeout=600)


def _arrays(n: int = 240) -> dict:
    arr = make_arrays(n=n, task="regression")
    arr["c"] = (arr["vec"][:, 0] > 0).astype(np.int64) * 3 + 1  # class ids 1 and 4 (not 0..K-1)
    return arr


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("edge")
    cfg = make_config(task="regression", student="seq", teacher=["vec", "seq", "img"], epochs=1)
    cfg["student"]["modalities"] = ["vec", "seq"]
    cfg["data"]["targets"] = {"y": {"kind": "regression"}, "c": {"kind": "classification"}}
    cfg["uncertainty"] = {"availability_edges": [0.5, 0.8]}
    y = write_case(d, arrays=_arrays(), config=cfg)
    cmkd.run(str(y), d / "out", quiet=True, overrides=["export.latency_runs=5", "export.model=student"])
    return d / "out"


def test_sidecars_follow_the_schema_and_describe_the_graph(run_dir: Path) -> None:
    import onnxruntime as ort

    for name, precision in (("student", "fp32"), ("student.int8", "int8")):
        card = json.loads((run_dir / f"{name}.json").read_text())
        jsonschema.validate(card, schema())
        assert card["model"] == {"file": f"{name}.onnx", "precision": precision, "sha256": sha256(
            run_dir / f"{name}.onnx"), "bytes": (run_dir / f"{name}.onnx").stat().st_size}
        sess = ort.InferenceSession(str(run_dir / f"{name}.onnx"), providers=["CPUExecutionProvider"])
        assert [o["name"] for o in card["outputs"]] == [o.name for o in sess.get_outputs()]
        assert [i["name"] for i in card["inputs"]] == [i.name for i in sess.get_inputs()] == ["vec", "seq"]
        props = {p.key: p.value for p in onnx.load(str(run_dir / f"{name}.onnx")).metadata_props}
        assert props["cmkd.sidecar"] == f"{name}.json" and props["cmkd.version"] == cmkd.__version__
    card = json.loads((run_dir / "student.json").read_text())
    c = next(t for t in card["targets"] if t["name"] == "c")
    assert [k["id"] for k in c["classes"]] == [1, 4]
    assert {o["name"]: o["meaning"] for o in card["outputs"]} == {"y": "mean", "c": "probabilities",
                                                                   "y_std": "std"}
    meta = safe_load(run_dir / "student.pt")
    assert card["conformal"]["y"]["columns"][0]["q"] == pytest.approx(meta["conformal"]["y"][0]["q"])
    assert card["availability"]["edges"] == [0.5, 0.8]
    assert card["training_data"]["synthetic"] is False and card["training_data"]["n_train"] > 0
    assert card["cmkd_version"] == cmkd.__version__


def test_json_outputs_are_strict(run_dir: Path) -> None:
    """Every JSON file of the run parses with NaN / Infinity refused; metrics.json says the run is not quick."""
    def refuse(name: str) -> None:
        raise ValueError(f"non-standard JSON constant {name}")

    for f in run_dir.glob("*.json"):
        json.loads(f.read_text(), parse_constant=refuse)
    assert json.loads((run_dir / "metrics.json").read_text())["quick"] is False


def test_strict_dumps() -> None:
    from cmkd.io import dumps

    doc = {"a": float("nan"), "b": [np.float32(np.inf), np.int64(3)], "c": np.array([1.5, -np.inf]), 1: (2,)}
    assert json.loads(dumps(doc)) == {"a": None, "b": [None, 3], "c": [1.5, None], "1": [2]}


def test_onnx_outputs_probabilities_with_parity(run_dir: Path) -> None:
    m = json.loads((run_dir / "metrics.json").read_text())
    assert m["export"]["max_abs_diff"] <= 1e-4  # probabilities vs softmax of the torch logits, values vs values
    x = _arrays(20)
    out = EdgeModel(run_dir / "student.onnx").run(model_inputs(safe_load(run_dir / "student.pt"), x, "x"))
    assert np.allclose(out["c"].sum(axis=1), 1, atol=1e-5) and (out["c"] >= 0).all()
    assert (out["y_std"] > 0).all()


def test_predict_honours_present_mask(run_dir: Path, tmp_path: Path) -> None:
    """Issue 22's bug: `<modality>__present` False means absent for `cmkd predict` too, as for run and evaluate."""
    x = {k: v for k, v in _arrays(30).items() if k in ("vec", "seq")}
    absent = np.arange(30) % 3 == 0
    masked = {**x, "vec__present": ~absent}
    blank = {**x, "vec": np.where(absent[:, None], np.nan, x["vec"]).astype(np.float32)}
    for name, arrays in (("masked", masked), ("blank", blank), ("plain", x)):
        np.savez(tmp_path / f"{name}.npz", **arrays)
        r = cli("predict", "--model", str(run_dir), "--input", str(tmp_path / f"{name}.npz"),
                "--output", str(tmp_path / f"{name}.json"))
        assert r.returncode == 0, r.stderr
    got = {k: json.loads((tmp_path / f"{k}.json").read_text())["targets"] for k in ("masked", "blank", "plain")}
    assert got["masked"] == got["blank"]  # absent by flag = absent by values
    assert not np.allclose(got["masked"]["y"]["value"], got["plain"]["y"]["value"])  # the flag matters
    # the intervals follow the availability: a sample without vec falls in a lower band
    assert got["masked"]["y"]["lower"] == got["blank"]["y"]["lower"]


def test_model_inputs_and_dataset_share_the_presence_rule(run_dir: Path) -> None:
    from cmkd.training.continual import model_dataset

    meta = safe_load(run_dir / "student.pt")
    arr = _arrays(30)
    arr["vec__present"] = np.arange(30) % 2 == 0
    feed = model_inputs(meta, arr, "x")
    assert np.isnan(feed["vec"][1::2]).all() and not np.isnan(feed["vec"][::2]).any()
    ds = model_dataset(meta, arr, "x")
    assert (ds.present["vec"] == arr["vec__present"]).all()
    arr["vec__present"] = np.full(30, 2)
    with pytest.raises(cmkd.CmkdError, match="vec__present"):
        model_inputs(meta, arr, "x")


def test_runtime_imports_without_torch() -> None:
    code = ("import sys; sys.modules['torch'] = None; sys.modules['sklearn'] = None\n"
            "import cmkd.runtime, cmkd\n"
            "assert not any(m.startswith(('torch', 'sklearn', 'scipy', 'pandas')) and sys.modules[m] is not None "
            "for m in sys.modules)\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr


def _readme_client() -> str:
    text = (ROOT / "README.md").read_text()
    block = re.search(r"<!-- client-example -->\s*```python\n(.*?)```", text, re.S)
    assert block, "README: the client example block (after <!-- client-example -->) is missing"
    return block.group(1)


def test_readme_client_example_runs(run_dir: Path, tmp_path: Path) -> None:
    """The README's ten-line client runs as written (in the model folder, on an npz of the student's inputs)."""
    code = _readme_client()
    assert len(code.strip().splitlines()) <= 12
    x = {k: v for k, v in _arrays(5).items() if k in ("vec", "seq")}
    np.savez(tmp_path / "inputs.npz", **x)
    for f in ("student.onnx", "student.json"):
        (tmp_path / f).write_bytes((run_dir / f).read_bytes())
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip(), "the example prints its predictions"


@pytest.mark.slow  # builds a venv and pip-installs numpy + onnxruntime into it
def test_torch_free_venv_matches_cmkd_predict(run_dir: Path, tmp_path: Path) -> None:
    """A venv with only numpy + onnxruntime (no torch, no cmkd install: runtime.py copied alone) gives the same
    predictions as `cmkd predict`."""
    venv = tmp_path / "venv"
    r = subprocess.run([sys.executable, "-m", "venv", str(venv)], capture_output=True, text=True, timeout=300)
    if r.returncode != 0:
        pytest.skip(f"cannot create a venv: {r.stderr.strip()[-200:]}")
    py = venv / "bin" / "python"
    r = subprocess.run([str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check", "numpy",
                        "onnxruntime"], capture_output=True, text=True, timeout=900)
    if r.returncode != 0:
        pytest.skip(f"pip cannot install numpy + onnxruntime from the registry: {r.stderr.strip()[-200:]}")
    lib = tmp_path / "lib"
    lib.mkdir()
    (lib / "runtime.py").write_bytes((ROOT / "src" / "cmkd" / "runtime.py").read_bytes())
    x = {k: v for k, v in _arrays(25).items() if k in ("vec", "seq")}
    x["vec__present"] = np.arange(25) % 4 != 0
    np.savez(tmp_path / "in.npz", **x)
    code = textwrap.dedent(f"""
        import json, sys
        import runtime
        assert "torch" not in sys.modules
        try:
            import torch  # noqa: F401
            sys.exit("torch is importable in the venv")
        except ImportError:
            pass
        model = runtime.EdgeModel({str(run_dir / 'student.onnx')!r})
        res = model.predict(runtime.load_npz({str(tmp_path / 'in.npz')!r}))
        print(json.dumps(res["targets"]))
    """)
    r = subprocess.run([str(py), "-c", code], capture_output=True, text=True, timeout=120,
                       env={"PYTHONPATH": str(lib), "PATH": "/usr/bin:/bin"})
    assert r.returncode == 0, r.stderr
    r2 = cli("predict", "--model", str(run_dir), "--input", str(tmp_path / "in.npz"), "--output",
             str(tmp_path / "p.json"))
    assert r2.returncode == 0, r2.stderr
    assert json.loads(r.stdout) == json.loads((tmp_path / "p.json").read_text())["targets"]


@pytest.mark.parametrize("edit,field", [
    (lambda c: c.update(format_version="1.0"), "'format_version' must be integer"),
    (lambda c: c["inputs"][0].pop("shape"), "'inputs[0].shape' is missing"),
    (lambda c: c["inputs"][0].update(shape=[0]), "'inputs[0].shape[0]' is 0"),
    (lambda c: c["model"].update(precision="fp64"), "'model.precision' must be one of"),
    (lambda c: c.pop("targets"), "'targets' is missing"),
    (lambda c: c["targets"][0].update(outputs={"mean": 3}), "'targets[0].outputs.mean' must be string"),
])
def test_sidecar_checked_against_its_schema(run_dir: Path, tmp_path: Path, edit, field: str) -> None:
    """The runtime validates a sidecar against edge_model.schema.json on load and names the wrong field (a
    traceback before: ValueError for format_version "1.0", KeyError for an input without shape)."""
    from cmkd.errors import CmkdError

    for name in ("student.onnx", "student.json"):
        (tmp_path / name).write_bytes((run_dir / name).read_bytes())
    card = json.loads((tmp_path / "student.json").read_text())
    edit(card)
    with pytest.raises(jsonschema.ValidationError):  # the schema itself refuses it too
        jsonschema.validate(card, schema())
    (tmp_path / "student.json").write_text(json.dumps(card))
    with pytest.raises(CmkdError) as e:
        EdgeModel(tmp_path / "student.onnx")
    msg = str(e.value)
    assert "\n" not in msg and field in msg and "student.json" in msg, msg


def test_hand_validator_agrees_with_jsonschema(run_dir: Path) -> None:
    """cmkd.runtime.schema_problem (no jsonschema at run time) on every real sidecar and random damage to it."""
    import copy

    from cmkd.runtime import schema_problem

    rng = np.random.default_rng(0)
    junk = [None, "1.0", -1, 0, 1.5, True, [], {}, "x", [1], {"a": 1}]
    sch = schema()
    for f in sorted(run_dir.glob("student*.json")):
        card = json.loads(f.read_text())
        assert schema_problem(card, sch) is None, f
        for _ in range(200):
            c = copy.deepcopy(card)
            node, path = c, []
            while isinstance(node, (dict, list)) and node and rng.random() < 0.7:
                key = list(node)[rng.integers(len(node))] if isinstance(node, dict) else int(rng.integers(len(node)))
                if not isinstance(node[key], (dict, list)) or rng.random() < 0.3:
                    break
                node, path = node[key], [*path, key]
            if not isinstance(node, (dict, list)) or not node:
                continue
            key = list(node)[rng.integers(len(node))] if isinstance(node, dict) else int(rng.integers(len(node)))
            if isinstance(node, dict) and rng.random() < 0.3:
                del node[key]
            else:
                node[key] = junk[int(rng.integers(len(junk)))]
            try:
                jsonschema.validate(c, sch)
                valid = True
            except jsonschema.ValidationError:
                valid = False
            assert (schema_problem(c, sch) is None) == valid, (path, key, node.get(key) if isinstance(node, dict)
                                                                 else node[key])
