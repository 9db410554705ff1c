"""Ray Tune searches on tiny data with a local Ray of 2 CPUs, and against a `ray start` head."""

import json
import math
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import REPO, base_config, content_dataset, toy_splits, write_dataset

ray = pytest.importorskip("ray")
from ray.tune.search.sample import Categorical, Float  # noqa: E402

from recbole_mmssl.experiments.tune import SearchSpaceError, load_search_space, run_search  # noqa: E402


def write(path, text):
    Path(path).write_text(text)
    return str(path)


def test_yaml_space_samplers_and_fixed_values(tmp_path):
    space, fixed = load_search_space(write(tmp_path / "s.yaml", (
        "learning_rate: {loguniform: [1.0e-4, 1.0e-2]}\n"
        "n_layers: {grid: [1, 2]}\n"
        "gumbel_tau: {choice: [0.002, 0.005]}\n"
        "g_weight: {qloguniform: [1.0e-5, 1.0e-2, 1.0e-5]}\n"
        "embedding_size: {qrandint: [16, 64, 16]}\n"
        "epochs: 3\n")))
    assert fixed == {"epochs": 3}
    assert isinstance(space["learning_rate"], Float)
    assert (space["learning_rate"].lower, space["learning_rate"].upper) == (1e-4, 1e-2)
    assert space["n_layers"] == {"grid_search": [1, 2]}
    assert isinstance(space["gumbel_tau"], Categorical) and space["gumbel_tau"].categories == [0.002, 0.005]
    assert all(16 <= space["embedding_size"].sample() <= 64 for _ in range(20))


def test_recbole_hyper_file(tmp_path):
    space, fixed = load_search_space(write(tmp_path / "s.hyper", (
        "learning_rate loguniform -8,0\n"
        "embedding_size choice [64,96,128]\n"
        "dropout uniform 0.1,0.5\n"
        "reg_weight quniform 1,5,1\n")))
    assert fixed == {}
    assert space["learning_rate"].lower == pytest.approx(math.exp(-8)) and space["learning_rate"].upper == 1.0
    assert space["embedding_size"].categories == [64, 96, 128]
    assert (space["dropout"].lower, space["dropout"].upper) == (0.1, 0.5)


@pytest.mark.parametrize("text, message", [
    ("learning_rate: {lognormal: [1, 2]}\n", r"learning_rate uses sampler 'lognormal'"),
    ("learning_rate: {uniform: [0.1]}\n", r"learning_rate: uniform takes 2 numbers"),
    ("learning_rate: {loguniform: [0, 1]}\n", r"needs positive bounds"),
    ("learning_rate: {uniform: [2, 1]}\n", r"needs low < high"),
    ("epochs: 3\n", r"defines no searched key"),
    ("variant: {grid: [reference, bogus]}\n", r"variant can take 'bogus'; variant allows one of"),
    ("learning_rate: {uniform: [-0.1, 0.1]}\n", r"learning_rate can take -0.1"),
])
def test_bad_search_spaces(tmp_path, text, message):
    with pytest.raises(SearchSpaceError, match=message):
        load_search_space(write(tmp_path / "s.yaml", text))


def test_bundled_spaces_load():
    space, _ = load_search_space(REPO / "properties" / "tune" / "mmssl.yaml")
    assert {"learning_rate", "d_learning_rate", "g_weight", "gumbel_tau", "cl_temperature", "cl_weight",
            "n_layers"} <= set(space)
    space, _ = load_search_space(REPO / "properties" / "tune" / "lightgcn.hyper")
    assert {"learning_rate", "reg_weight", "n_layers"} == set(space)
    baselines = {"vbpr": {"learning_rate", "reg_weight"}, "lattice": {"learning_rate", "reg_weight"},
                 "freedom": {"learning_rate", "reg_weight", "dropout"},
                 "bm3": {"learning_rate", "reg_weight", "dropout", "n_layers"}}
    for name, keys in baselines.items():
        space, _ = load_search_space(REPO / "properties" / "tune" / f"{name}.yaml")
        assert set(space) == keys, name


@pytest.fixture
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1")
    yield
    ray.shutdown()


def test_search_writes_table_and_best_yaml_that_reproduces(tmp_path, in_tmp, local_ray):
    """lr 0.05 against lr 0 (no learning): ASHA stops the second before its last epoch."""
    content_dataset(tmp_path, shuffle=False)
    config = base_config(tmp_path, "content", epochs=4, train_batch_size=256, embedding_size=16)
    space = write(tmp_path / "space.yaml", "learning_rate: {grid: [0.05, 0.0]}\n")
    table, best, folder = run_search("LightGCN", "content", space, config_dict=config, max_concurrent_trials=1,
                                     output_dir=str(tmp_path / "ray_results"), experiment_name="lr")
    assert list(table["learning_rate"]) == [0.05, 0.0]
    assert list(table["status"]) == ["completed", "stopped early"]
    assert table["epochs"][1] < 4 and table["recall@20"][0] > table["recall@20"][1]
    assert not math.isnan(table["test/recall@20"][0])
    assert (Path(folder) / "trials.csv").is_file()
    saved = yaml.safe_load((Path(folder) / "best_config.yaml").read_text())
    assert saved == best and best["learning_rate"] == 0.05 and best["model"] == "LightGCN"

    out = subprocess.run([sys.executable, str(REPO / "run_recbole_mmssl.py"),
                          f"--config_files={folder}/best_config.yaml", "--state=INFO"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    valid = re.search(r"best valid : OrderedDict\((.*)\)", out.stdout + out.stderr).group(1)
    assert f"('recall@20', {table['recall@20'][0]})" in valid


@pytest.mark.parametrize("model", ["VBPR", "LATTICE", "FREEDOM", "BM3"])
def test_search_accepts_the_multimodal_baselines(tmp_path, in_tmp, local_ray, model):
    content_dataset(tmp_path, shuffle=False)
    config = base_config(tmp_path, "content", modalities=["image", "text"], epochs=1, train_batch_size=256,
                         embedding_size=8)
    space = write(tmp_path / "space.yaml", "learning_rate: {grid: [0.01, 0.001]}\n")
    table, best, _ = run_search(model, "content", space, config_dict=config, max_concurrent_trials=2,
                                output_dir=str(tmp_path / "ray_results"), experiment_name=model)
    assert len(table) == 2 and set(table["status"]) <= {"completed", "stopped early"}  # ASHA may stop one
    assert table["recall@20"].notna().all() and best["model"] == model


def test_failing_trial_is_recorded_while_others_finish(tmp_path, in_tmp, local_ray):
    features = {"image": __import__("numpy").random.default_rng(0).normal(size=(80, 4)).astype("float32")}
    write_dataset(tmp_path / "data", "toy", toy_splits(), features, [f"i{k}" for k in range(80)])
    config = base_config(tmp_path, "toy", modalities=["image"], epochs=2, train_batch_size=16, n_heads=4,
                         attention="paper")
    # every value is allowed on its own; 6 dimensions cannot be split over 4 attention heads
    space = write(tmp_path / "space.yaml", "embedding_size: {grid: [8, 6, 16]}\n")
    table, best, _ = run_search("MMSSL", "toy", space, config_dict=config, grace_period=10,  # no ASHA race
                                output_dir=str(tmp_path / "ray_results"), experiment_name="fail")
    status = dict(zip(table["embedding_size"], table["status"]))
    assert status[8] == status[16] == "completed"
    assert status[6].startswith("failed") and "divisible" in status[6]
    assert best["embedding_size"] in (8, 16)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop_processes_mentioning(*texts, grace=10.0):
    """Stop every process whose command line holds all of ``texts`` (Linux; SIGTERM, then SIGKILL
    after ``grace`` seconds): the test's own Ray head, where `ray stop` would stop every Ray on the
    machine, a user's running search too."""
    import signal
    import time

    def matching():
        pids = []
        for proc in Path("/proc").glob("[0-9]*"):
            try:
                cmdline = (proc / "cmdline").read_bytes()
                if all(text.encode() in cmdline for text in texts):
                    pids.append(int(proc.name))
            except OSError:
                continue
        return pids

    for sig in (signal.SIGTERM, signal.SIGKILL):
        deadline = time.time() + grace
        for pid in matching():
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        while matching() and time.time() < deadline and sig == signal.SIGTERM:
            time.sleep(0.5)


def test_search_on_a_started_head_node(tmp_path):
    """The README's cluster commands: `ray start --head`, then the search with --ray_address."""
    import shutil
    import tempfile

    ray_cli = str(Path(sys.executable).parent / "ray")
    port = free_port()
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    temp_dir = tempfile.mkdtemp(prefix="ray-test-", dir="/tmp")  # short: Ray's socket paths have a length limit
    start = subprocess.run([ray_cli, "start", "--head", "--node-ip-address=127.0.0.1", f"--port={port}",
                            "--num-cpus=2", "--include-dashboard=false", "--disable-usage-stats",
                            f"--temp-dir={temp_dir}"],
                           capture_output=True, text=True, timeout=120, env=env)
    assert start.returncode == 0, start.stderr[-2000:]
    try:
        content_dataset(tmp_path, shuffle=False)
        config = base_config(tmp_path, "content", epochs=2, train_batch_size=256, embedding_size=16)
        config.pop("dataset")
        write(tmp_path / "base.yaml", yaml.safe_dump(config))
        write(tmp_path / "space.yaml", "learning_rate: {choice: [0.01, 0.05]}\n")
        out = subprocess.run(
            [sys.executable, str(REPO / "run_recbole_mmssl.py"), "--model=LightGCN", "--dataset=content",
             "--config_files=base.yaml", "--tune=space.yaml", "--num_samples=2",
             f"--ray_address=127.0.0.1:{port}", "--experiment_name=cluster",
             "--grace_period=3"],  # no ASHA rung before the end: both trials complete
            cwd=tmp_path, capture_output=True, text=True, timeout=300, env=env)
        assert out.returncode == 0, out.stderr[-3000:]
        assert "Connecting to existing Ray cluster" in out.stderr + out.stdout
        assert (tmp_path / "ray_results" / "cluster" / "best_config.yaml").is_file()
        trials = (tmp_path / "ray_results" / "cluster" / "trials.csv").read_text().splitlines()
        assert len(trials) == 3 and all(",completed," in row for row in trials[1:])
    finally:
        stop_processes_mentioning(temp_dir)
        # Ray's client server names the head's port (at the node's own address), not its folder
        stop_processes_mentioning("ray.util.client.server", f":{port}")
        shutil.rmtree(temp_dir, ignore_errors=True)


def test_interrupted_search_resumes(tmp_path):
    """SIGINT once the second trial has reported; --resume runs the rest without repeating the first.

    The first trial writes its final result before Ray records it as terminated, so the signal waits
    for the second trial (one runs at a time): by then the first is terminated in the saved state.
    """
    import signal
    import time

    content_dataset(tmp_path, shuffle=False)
    config = base_config(tmp_path, "content", epochs=3, train_batch_size=256, embedding_size=16)
    config.pop("dataset")
    write(tmp_path / "base.yaml", yaml.safe_dump(config))
    write(tmp_path / "space.yaml", "learning_rate: {grid: [0.05, 0.02, 0.01]}\n")
    command = [sys.executable, str(REPO / "run_recbole_mmssl.py"), "--model=LightGCN", "--dataset=content",
               "--config_files=base.yaml", "--tune=space.yaml", "--max_concurrent_trials=1",
               "--experiment_name=resumable", "--grace_period=10"]  # no ASHA stops here
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    search = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env,
                              text=True)
    experiment = tmp_path / "ray_results" / "resumable"
    deadline = time.time() + 240
    first = None
    while time.time() < deadline and first is None:
        time.sleep(0.5)
        assert search.poll() is None, search.communicate()[0][-3000:]
        results = sorted((p for p in experiment.glob("*/result.json") if p.read_text().strip()),
                         key=lambda p: p.parent.name)  # trial directories are numbered in order
        if len(results) >= 2 and '"finished": true' in results[0].read_text():
            first = results[0]
    assert first is not None, "the first trial did not finish, or the second did not start, in time"
    search.send_signal(signal.SIGINT)
    search.communicate(timeout=240)
    lines_before = first.read_text().count("\n")

    out = subprocess.run(command + ["--resume=resumable"], cwd=tmp_path, capture_output=True, text=True,
                         timeout=300, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    rows = (experiment / "trials.csv").read_text().splitlines()
    assert len(rows) == 4 and all(",completed," in row for row in rows[1:]), rows
    assert first.read_text().count("\n") == lines_before  # the finished trial was not run again


def test_interrupted_trial_continues_from_its_last_epoch(tmp_path):
    """SIGINT in the middle of a trial; --resume continues it after its last finished epoch."""
    import signal
    import time

    content_dataset(tmp_path, shuffle=False)
    config = base_config(tmp_path, "content", epochs=8, train_batch_size=64, embedding_size=16, stopping_step=20)
    config.pop("dataset")
    write(tmp_path / "base.yaml", yaml.safe_dump(config))
    write(tmp_path / "space.yaml", "learning_rate: {grid: [0.01]}\n")
    command = [sys.executable, str(REPO / "run_recbole_mmssl.py"), "--model=LightGCN", "--dataset=content",
               "--config_files=base.yaml", "--tune=space.yaml", "--experiment_name=long", "--grace_period=20"]
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    search = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env,
                              text=True)
    experiment = tmp_path / "ray_results" / "long"
    deadline = time.time() + 240
    while time.time() < deadline:
        time.sleep(0.2)
        assert search.poll() is None, search.communicate()[0][-3000:]
        results = list(experiment.glob("*/result.json"))
        if results and '"epochs_done": 3,' in results[0].read_text():
            break
    else:
        pytest.fail("the trial did not report 3 epochs in time")
    search.send_signal(signal.SIGINT)
    search.communicate(timeout=240)
    trial = results[0].parent
    assert (trial / "saved" / "model-last.pth").is_file()
    done_before = results[0].read_text().count('"epochs_done"')
    assert 3 <= done_before < 8

    out = subprocess.run(command + ["--resume=long"], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                         env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    reports = [json.loads(line) for line in results[0].read_text().splitlines()]
    epochs = [r["epoch"] for r in reports if r["epoch"] >= 0]
    # no epoch trained twice (the one cut off by the interruption may be trained but not reported)
    assert epochs == sorted(set(epochs)) and epochs[0] == 0 and epochs[-1] == 7 and len(epochs) >= 7
    assert reports[-1]["finished"] and reports[-1]["epochs_done"] == 8
    curve = (trial / "saved" / "epochs.csv").read_text().splitlines()
    assert len(curve) == 9 and not (trial / "saved" / "model-last.pth").exists()
