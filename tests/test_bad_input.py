"""Bad input on every command line: exit status 2, exactly one ``error:`` line that names the key,
value or file (and, for values, what is allowed), no traceback, and nothing written. A bug of the
package still exits 1 with its traceback."""

import runpy
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO, base_config, built, toy_splits, write_dataset
from recbole_mmssl.data.encode import main as encode_main
from recbole_mmssl.data.prepare import main as prepare_main
from recbole_mmssl.experiments.analyze import main as analyze_main
from recbole_mmssl.experiments.compare import main as compare_main
from recbole_mmssl.trainer.checkpoint import main as checkpoint_main

RUN_SCRIPT = runpy.run_path(str(REPO / "run_recbole_mmssl.py"), run_name="run_recbole_mmssl")["main"]


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory):
    """A LightGCN checkpoint of one epoch on a generated dataset (for the tools that read one)."""
    root = tmp_path_factory.mktemp("saved")
    write_dataset(root / "data", "toy", toy_splits())
    config = {**base_config(root, "toy"), "embedding_size": 8}
    _, (train, valid, _), _, trainer = built("LightGCN", config)
    trainer.fit(train, valid, saved=True)
    return trainer.saved_model_file


@pytest.fixture
def inputs(tmp_path):
    """Files of the wrong kind, written once: not a checkpoint, not UTF-8, not YAML, not .npy."""
    folder = tmp_path / "inputs"
    folder.mkdir()
    (folder / "garbage.pth").write_bytes(b"not a checkpoint at all")
    (folder / "latin1.csv").write_bytes("item,title\n1,Caf\xe9 noir\n".encode("latin-1"))
    (folder / "good.csv").write_text("item,title\n1,Cafe noir\n")
    (folder / "broken.yaml").write_text("learning_rate: [0.1\n")
    (folder / "list.yaml").write_text("- a\n- b\n")
    (folder / "negative_lr.yaml").write_text("learning_rate: {grid: [0.01, -1.0]}\n")
    (folder / "feat.txt").write_text("1 2 3\n")
    (folder / "no_split.inter").write_text("userID\titemID\n1\t2\n")
    mmssl_src = folder / "mmssl_src"
    mmssl_src.mkdir()
    for name in ("train.json", "val.json", "test.json"):
        (mmssl_src / name).write_text('{"0": [0, 1], "1": [1]}')
    np.save(mmssl_src / "image_feat.npy", np.ones((1, 4), dtype=np.float32))  # too few rows
    prepared = write_dataset(tmp_path / "prepared", "toy", toy_splits(), token_order=[str(k) for k in range(80)])
    return folder, prepared


def refused(capsys, workdir, call, *names):
    """``call`` exits 2 with one ``error:`` line naming every one of ``names``, no traceback, no new file."""
    before = sorted(p.relative_to(workdir) for p in workdir.rglob("*"))
    with pytest.raises(SystemExit) as stop:
        call()
    err = capsys.readouterr().err
    assert stop.value.code == 2, err
    lines = [line for line in err.splitlines() if "error:" in line]
    assert len(lines) == 1 and "Traceback" not in err, err
    for name in names:
        assert str(name) in lines[0], (name, lines[0])
    assert sorted(p.relative_to(workdir) for p in workdir.rglob("*")) == before


def run_script(monkeypatch, *argv):
    monkeypatch.setattr(sys, "argv", ["run_recbole_mmssl.py", *map(str, argv)])
    return RUN_SCRIPT


@pytest.mark.parametrize("flag, named", [
    ("--feature_shuffle_seed=abc", ["feature_shuffle_seed", "'abc'", "an integer >= 0", "--feature_shuffle_seed"]),
    ("--graph_topk_rate=-0.1", ["graph_topk_rate", "-0.1", "[0, 1]"]),
    ("--epochs=0", ["epochs", "an integer >= 1"]),
    ("--train_batch_size=2.5", ["train_batch_size", "2.5", "an integer >= 1"]),
    ("--cl_temperature=0", ["cl_temperature", "a number > 0"]),
    ("--feat_dropout=1.0", ["feat_dropout", "[0, 1)"]),
    ("--last_layer_norm=tanh", ["last_layer_norm", "'tanh'", "softmax"]),
    ("--use_adversarial=maybe", ["use_adversarial", "True or False"]),
    ("--d_betas=[0.5]", ["d_betas", "a list of 2 values"]),
    ("--feature_dims=[1]", ["feature_dims", "a mapping"]),
    ("--learner=adamx", ["learner", "'adamx'", "adam"]),
    ("--test_masked_items=valid", ["test_masked_items", "train_valid"]),
    ("--variant=best", ["variant", "'best'", "improved"]),
    ("--model=NoSuchModel", ["NoSuchModel"]),
    ("--metrics=['Recall','Bogus']", ["Bogus", "metric"]),
    ("--topk=[0]", ["topk", "0"]),
    ("--eval_args={'mode':'bogus'}", ["bogus", "eval_args"]),
    ("--train_neg_sample_args={'distribution':'zipf'}", ["zipf", "train_neg_sample_args"]),
    ("--valid_metric=foo@20", ["valid_metric", "'foo@20'", "recall@50"]),
    ("--valid_metric=recall@5", ["valid_metric", "'recall@5'", "[10, 20, 50]"]),
    ("--clip_grad_norm={'foo':1}", ["clip_grad_norm", "max_norm"]),
    ("--attention=paper --n_heads=3", ["embedding_size", "n_heads", "divisible"]),
    ("--dataset=nosuchdataset", ["nosuchdataset", "not found"]),
])
def test_run_script_refuses_config_values(monkeypatch, capsys, tmp_path, flag, named):
    monkeypatch.chdir(tmp_path)
    argv = flag.split(" ") + ([] if flag.startswith("--dataset") else ["--dataset=tiktok"])
    refused(capsys, tmp_path, run_script(monkeypatch, *argv), *named)


def test_run_script_refuses_files(monkeypatch, capsys, tmp_path, inputs):
    folder, _ = inputs
    monkeypatch.chdir(tmp_path)
    for flag, named in ((f"--resume_checkpoint={tmp_path / 'missing.pth'}", ["missing.pth", "does not exist"]),
                        (f"--resume_checkpoint={folder / 'garbage.pth'}", ["garbage.pth", "not a checkpoint"]),
                        (f"--config_files={tmp_path / 'missing.yaml'}", ["missing.yaml", "not found"]),
                        (f"--config_files={folder / 'broken.yaml'}", ["broken.yaml", "not valid YAML"]),
                        (f"--config_files={folder / 'list.yaml'}", ["list.yaml", "must map config keys"]),
                        (f"--tune={tmp_path / 'missing.yaml'}", ["missing.yaml", "not found"]),
                        (f"--tune={folder / 'negative_lr.yaml'}", ["negative_lr.yaml", "learning_rate", "-1.0"])):
        refused(capsys, tmp_path, run_script(monkeypatch, "--dataset=tiktok", flag), *named)


def test_compare_refuses(monkeypatch, capsys, tmp_path, inputs):
    folder, _ = inputs
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["compare"])
    cases = [
        (["--checkpoints", str(tmp_path / "missing.pth")], ["missing.pth"]),
        (["--checkpoints", str(folder / "garbage.pth")], ["garbage.pth"]),
        (["--models", "NoSuchModel", "--dataset", "tiktok"], ["NoSuchModel"]),
        (["--models", "LightGCN", "--dataset", "tiktok", "--learning_rate=-1"], ["learning_rate", "-1", ">= 0"]),
        (["--models", "LightGCN", "--dataset", "tiktok", "--epochs=abc"], ["epochs", "'abc'", "an integer"]),
        (["--run", f"x=MMSSL:{tmp_path / 'missing.yaml'}", "--dataset", "tiktok"], ["missing.yaml"]),
        (["--run", "=MMSSL", "--dataset", "tiktok"], ["LABEL=MODEL"]),
        (["--models", "LightGCN", "--dataset", "tiktok", "--datasets", "tiktok", "ml-100k"], ["--datasets"]),
        (["--models", "LightGCN", "--datasets", "tiktok", "nosuchdataset"], ["nosuchdataset", "not found"]),
        (["--models", "LightGCN", "--dataset", "tiktok", "--n_seeds", "0"], ["--n_seeds", "1 or more"]),
        (["--models", "FREEDOM", "--dataset", "tiktok", "--mm_weights=[1.0]"], ["mm_weights", "one weight per modality"]),
    ]
    for argv, named in cases:
        refused(capsys, tmp_path, lambda: compare_main(argv), *named)


def test_analyze_refuses(monkeypatch, capsys, tmp_path, inputs, saved_model):
    folder, _ = inputs
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["analyze"])
    cases = [
        ([str(tmp_path / "missing.pth")], ["missing.pth"]),
        ([str(folder / "garbage.pth")], ["garbage.pth"]),
        ([saved_model, "--user_groups", "5,2,x"], ["--user_groups", "5,2,x"]),
        ([saved_model, "--k", "7"], ["--k 7", "topk"]),
        ([saved_model, "--tail_ratio", "2"], ["tail_ratio", "2", "(0, 1)"]),
        ([saved_model, "--phase", "train"], ["--phase"]),
    ]
    for argv, named in cases:
        refused(capsys, tmp_path, lambda: analyze_main(argv), *named)


def test_prepare_refuses(monkeypatch, capsys, tmp_path, inputs):
    folder, prepared = inputs
    monkeypatch.chdir(tmp_path)
    out = str(tmp_path / "out")
    cases = [
        (["mmssl", str(tmp_path / "nosuch"), "--name", "x", "--out", out], ["train.json", "not found"]),
        (["mmssl", str(folder / "mmssl_src"), "--name", "x", "--out", out], ["image_feat.npy", "rows"]),
        (["mmrec", str(tmp_path / "missing.inter"), "--name", "x", "--out", out], ["missing.inter"]),
        (["mmrec", str(folder / "no_split.inter"), "--name", "x", "--out", out], ["no_split.inter", "x_label"]),
        (["features", str(tmp_path / "nosuch"), "--feature", "image=x.npy"], ["nosuch", "not found"]),
        (["features", str(prepared), "--feature", f"image={folder / 'feat.txt'}"], ["feat.txt"]),
        (["features", str(prepared), "--feature", "image"], ["--feature", "MODALITY=PATH"]),
        (["ml-100k", "--out", out, "--modalities", "sound"], ["sound", "genre"]),
    ]
    for argv, named in cases:
        refused(capsys, tmp_path, lambda: prepare_main(argv), *named)


def test_encode_refuses(monkeypatch, capsys, tmp_path, inputs):
    folder, _ = inputs
    monkeypatch.chdir(tmp_path)
    out = str(tmp_path / "out")
    cases = [
        (["text", str(tmp_path / "missing.csv"), "--name", "x", "--out", out], ["missing.csv", "not found"]),
        (["text", str(folder / "latin1.csv"), "--name", "x", "--out", out], ["latin1.csv", "line 2", "0xe9",
                                                                               "--encoding"]),
        (["text", str(folder / "good.csv"), "--name", "x", "--out", out, "--encoding", "klingon"], ["klingon"]),
        (["text", str(folder / "good.csv"), "--name", "x", "--out", out, "--template", "{year}"], ["year"]),
        (["text", str(folder / "good.csv"), "--name", "../x", "--out", out], ["--name", "../x"]),
        (["image", str(tmp_path / "no_images"), "--name", "x", "--out", out], ["no_images"]),
    ]
    for argv, named in cases:
        refused(capsys, tmp_path, lambda: encode_main(argv), *named)


def test_checkpoint_upgrade_refuses(monkeypatch, capsys, tmp_path, inputs):
    folder, _ = inputs
    monkeypatch.chdir(tmp_path)
    for argv, named in ((["upgrade", str(folder / "garbage.pth")], ["--trust"]),
                        (["upgrade", "--trust", str(tmp_path / "missing.pth")], ["missing.pth"]),
                        (["upgrade", "--trust", str(folder / "garbage.pth")], ["garbage.pth"])):
        refused(capsys, tmp_path, lambda: checkpoint_main(argv), *named)


@pytest.mark.parametrize("flags", [["--scales", "nosuch"], ["--devices", "nosuch"]])
def test_the_benchmark_refuses_an_unknown_scale_or_device(tmp_path, flags):
    out = subprocess.run([sys.executable, str(REPO / "benchmarks" / "benchmark.py"), *flags],
                         cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert len([line for line in out.stderr.splitlines() if "error:" in line]) == 1 and "nosuch" in out.stderr
    assert not list(tmp_path.iterdir())


def test_a_bug_still_shows_its_traceback(tmp_path):
    """An error that is not the user's (here a bug injected into analyze) exits 1 with the traceback."""
    code = ("import recbole_mmssl.experiments.analyze as tool\n"
            "def broken(*args, **kwargs):\n    raise ZeroDivisionError('injected bug')\n"
            "tool.analyze = broken\ntool.main(['model.pth'])\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert out.returncode == 1 and "Traceback" in out.stderr and "ZeroDivisionError: injected bug" in out.stderr
    assert "error: " not in out.stderr.splitlines()[-1][:7]
