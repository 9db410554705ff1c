"""A run killed (SIGKILL) while its best checkpoint is half written: an in-place ``torch.save`` leaves
a broken file, the package's writer leaves the previous good checkpoint, and the run resumes."""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from conftest import REPO, base_config, built, toy_splits, write_dataset
from recbole_mmssl.errors import InputError
from recbole_mmssl.trainer.checkpoint import load_checkpoint

# The child trains; from its second epoch on, the first write of the best checkpoint stops halfway:
# half the bytes reach the file, a marker says so, and the process waits to be killed.
CHILD = r"""
import io, os, sys, time, json
import torch
sys.path.insert(0, {tests!r})
from conftest import built
from recbole_mmssl.trainer import checkpoint as format_module

config, mode, marker = json.loads({config!r}), {mode!r}, {marker!r}
real_save = torch.save

def half_written(obj, path, *args, **kwargs):
    buffer = io.BytesIO()
    real_save(obj, buffer)
    data = buffer.getvalue()
    with open(path, "wb") as f:
        f.write(data[: len(data) // 2])
        f.flush()
        os.fsync(f.fileno())
    open(marker, "w").close()
    time.sleep(600)

_, (train, valid, _), model, trainer = built(config["model"], config)
if mode == "in_place":  # what a writer without the package's atomic replace does
    best = trainer.saved_model_file
    trainer.fit(train, valid, saved=True)
    half_written(torch.load(best, weights_only=True), best)
else:
    original = format_module.save_checkpoint
    def save_checkpoint(state, path):
        if state["epoch"] >= 1 and not str(path).endswith("-last.pth"):
            format_module.torch.save = half_written
        original(state, path)
        format_module.torch.save = real_save
    format_module.save_checkpoint = save_checkpoint
    import recbole_mmssl.trainer.resume as resume
    resume.save_checkpoint = save_checkpoint
    trainer.fit(train, valid, saved=True)
print("finished without a best checkpoint after epoch 0")
"""


def kill_while_writing(config, mode, tmp_path):
    """Run the child until its marker appears, then SIGKILL it."""
    import json

    marker = tmp_path / f"{mode}.marker"
    code = CHILD.format(tests=str(REPO / "tests"), config=json.dumps(config), mode=mode, marker=str(marker))
    child = subprocess.Popen([sys.executable, "-c", code], cwd=tmp_path, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while not marker.exists():
        if child.poll() is not None or time.time() > deadline:
            child.kill()
            out, err = child.communicate()
            pytest.fail(f"the child never reached a half-written best checkpoint:\n{out}\n{err[-2000:]}")
        time.sleep(0.2)
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    assert child.returncode == -signal.SIGKILL


@pytest.fixture
def toy(tmp_path):
    rng = np.random.default_rng(2)
    features = {"image": rng.normal(size=(80, 8)).astype(np.float32)}
    write_dataset(tmp_path / "data", "toy", toy_splits(), features, [f"i{k}" for k in range(80)])
    return base_config(tmp_path, "toy", epochs=6, embedding_size=16, train_batch_size=32, stopping_step=10,
                       modalities=["image"])


def test_in_place_save_leaves_a_broken_checkpoint(toy, tmp_path):
    config = {**toy, "model": "LightGCN", "epochs": 1}
    kill_while_writing(config, "in_place", tmp_path)
    (best,) = (tmp_path / "saved").glob("LightGCN-*.pth")
    with pytest.raises(InputError, match="not a checkpoint"):
        load_checkpoint(best)


@pytest.mark.parametrize("model", ["MMSSL", "LightGCN"])
def test_killed_mid_write_keeps_the_previous_best_and_resumes(toy, tmp_path, model):
    extra = {"n_heads": 2} if model == "MMSSL" else {}
    config = {**toy, "model": model, **extra}
    kill_while_writing(config, "atomic", tmp_path)
    (best,) = [p for p in (tmp_path / "saved").glob(f"{model}-*.pth") if not p.name.endswith("-last.pth")]
    (last,) = (tmp_path / "saved").glob(f"{model}-*-last.pth")
    partial = list((tmp_path / "saved").glob(".*.partial"))
    assert partial and partial[0].stat().st_size > 0  # the half-written file never took the best one's place
    kept = load_checkpoint(best)
    assert kept["epoch"] == kept["best_epoch"] and kept["epoch"] < load_checkpoint(last)["epoch"] + 1

    _, (train, valid, _), _, resumed = built(model, config)
    resumed.resume_checkpoint(last)
    resumed.fit(train, valid, saved=True)
    assert load_checkpoint(resumed.saved_model_file)["epoch"] == resumed.best_epoch
    if model == "MMSSL":  # the whole run, uninterrupted, ends where the resumed one does
        _, (train, valid, _), _, whole = built(model, {**config, "checkpoint_dir": str(tmp_path / "whole")})
        whole.fit(train, valid, saved=True)
        for name, value in whole.model.state_dict().items():
            assert torch.equal(resumed.model.state_dict()[name], value), name
        assert resumed.best_valid_result == whole.best_valid_result
