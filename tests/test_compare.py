"""compare: several runs over several seeds, mean ± sd, paired tests over users, resumption."""

import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats

from conftest import is_picture
from recbole_mmssl import quick_start
from recbole_mmssl.experiments.compare import RunSpec, compare, main, parse_run, run_one
from recbole_mmssl.experiments.report import checkpoint_labels, paired_tests, pooled_user_scores
from recbole_mmssl.trainer.checkpoint import load_checkpoint
from recbole_mmssl.trainer.resume import CheckpointMixin
from recbole_mmssl.trainer import MMSSLTrainer

TINY = {"train_batch_size": 64, "epochs": 2, "embedding_size": 16, "state": "ERROR"}


def test_seeds_are_pooled_per_user_then_tested_pairwise():
    """Hand-made per-user scores: the pooled means by hand, the p-values from scipy.stats directly."""
    rng = np.random.default_rng(0)
    users = np.array([f"u{k}" for k in range(30)])
    base = [{"users": users, "recall@20": rng.random(30), "ndcg@20": rng.random(30)} for _ in range(2)]
    other = [{"users": users[::-1], "recall@20": rng.random(30), "ndcg@20": rng.random(30)} for _ in range(2)]
    pooled = pooled_user_scores({"base": base, "other": other})
    assert pooled["base"].loc["u3", "recall@20"] == pytest.approx((base[0]["recall@20"][3] + base[1]["recall@20"][3]) / 2)
    assert pooled["other"].loc["u3", "ndcg@20"] == pytest.approx(
        (other[0]["ndcg@20"][26] + other[1]["ndcg@20"][26]) / 2)  # reversed order: u3 is row 26

    table = paired_tests(pooled, "base").set_index("label")
    for metric in ("recall@20", "ndcg@20"):
        a = np.array([np.mean([r[metric][list(r["users"]).index(u)] for r in other]) for u in users])
        b = np.array([np.mean([r[metric][k] for r in base]) for k in range(30)])
        assert table.loc["other", f"{metric} t-test p"] == pytest.approx(stats.ttest_rel(a, b).pvalue)
        assert table.loc["other", f"{metric} Wilcoxon p"] == pytest.approx(stats.wilcoxon(a, b).pvalue)
        assert table.loc["other", f"{metric} mean diff"] == pytest.approx(np.mean(a - b))
    assert table.loc["other", "users"] == 30


def test_run_labels():
    assert parse_run("LightGCN") == RunSpec("LightGCN", "LightGCN", None)
    assert parse_run("ref=MMSSL") == RunSpec("ref", "MMSSL", None)
    with pytest.raises(FileNotFoundError, match="missing.yaml"):
        parse_run("improved=MMSSL:missing.yaml")


def test_checkpoint_labels(tmp_path):
    ray_trial = tmp_path / "trial_lr=0.01,n_layers=2" / "saved" / "model.pth"  # Ray's folder names hold '='
    ray_trial.parent.mkdir(parents=True)
    ray_trial.touch()
    files = ["cmp/improved/seed-1/model.pth", "cmp/lightgcn/seed-1/model.pth", "saved/BPR-x.pth"]
    assert checkpoint_labels(files) == [("improved/seed-1/model", files[0]), ("lightgcn/seed-1/model", files[1]),
                                        (None, files[2])]
    assert checkpoint_labels([str(ray_trial), "mine=a/b=c.pth"]) == [(None, str(ray_trial)), ("mine", "a/b=c.pth")]
    assert checkpoint_labels(["/x=1/model.pth"]) == [(None, "/x=1/model.pth")]  # a path, not a label
    with pytest.raises(ValueError, match="labels repeat"):
        checkpoint_labels(["a=x.pth", "a=y.pth"])


def test_two_models_two_seeds_write_the_comparison(toy_multimodal, in_tmp, monkeypatch):
    config, _, _ = toy_multimodal
    overrides = {k: v for k, v in config.items() if k != "dataset"}
    overrides.update(TINY)
    (in_tmp / "mmssl.yaml").write_text("use_adversarial: False\n")
    specs = [parse_run(f"mmssl-noasl=MMSSL:{in_tmp / 'mmssl.yaml'}"), RunSpec("BPR", "BPR")]
    output = in_tmp / "cmp"
    table, summary, tests = compare(specs, "toy", [7, 8], output, overrides=overrides)

    csv = pd.read_csv(output / "comparison.csv")
    assert list(zip(csv["label"], csv["seed"])) == [("mmssl-noasl", 7), ("mmssl-noasl", 8), ("BPR", 7), ("BPR", 8)]
    assert {"best_epoch", "epochs", "seconds_per_epoch", "valid/recall@20", "test/recall@20", "test/ndcg@20",
            "test/ndcg_ref@20"} <= set(csv.columns)
    assert (csv["epochs"] == 2).all() and csv["best_epoch"].between(0, 1).all()
    seeded = [load_checkpoint(output / "mmssl-noasl" / f"seed-{seed}" / "model.pth") for seed in (7, 8)]
    assert [c["config"]["seed"] for c in seeded] == [7, 8]
    assert not torch.equal(*(c["state_dict"]["user_embedding.weight"] for c in seeded))
    markdown = (output / "comparison.md").read_text()
    mean, sd = csv.loc[:1, "test/recall@20"].mean(), csv.loc[:1, "test/recall@20"].std(ddof=1)
    assert f"{mean:.4f} ± {sd:.4f}" in markdown
    assert "Paired tests against mmssl-noasl" in markdown and "| BPR |" in markdown
    assert 0 <= tests.loc[0, "recall@20 Wilcoxon p"] <= 1
    assert is_picture(output / "comparison.png") and is_picture(output / "mmssl-noasl" / "seed-7" / "epochs.png")
    run = output / "mmssl-noasl" / "seed-7"
    assert {"model.pth", "epochs.csv", "log.txt", "result.json", "test_users.npz"} <= set(os.listdir(run))
    with np.load(run / "test_users.npz") as data:
        assert data["recall@20"].mean() == pytest.approx(csv.loc[0, "test/recall@20"], abs=1e-4)

    # a restarted comparison skips finished runs: nothing is built or trained again
    monkeypatch.setattr(quick_start, "prepare_data", lambda *a, **k: pytest.fail("a finished run ran again"))
    again, _, _ = compare(specs, "toy", [7, 8], output, overrides=overrides)
    assert again.equals(table)


def test_an_interrupted_run_continues_from_its_last_epoch(toy_multimodal, in_tmp, monkeypatch):
    config, _, _ = toy_multimodal
    overrides = {**{k: v for k, v in config.items() if k != "dataset"}, **TINY, "use_adversarial": False}
    run = RunSpec("mmssl", "MMSSL")
    whole = run_one(run, "toy", 7, in_tmp / "whole", overrides=overrides)

    save = CheckpointMixin._save_last_checkpoint

    def save_then_die(self, epoch):
        save(self, epoch)
        raise KeyboardInterrupt

    monkeypatch.setattr(CheckpointMixin, "_save_last_checkpoint", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        run_one(run, "toy", 7, in_tmp / "cut", overrides=overrides)
    assert (in_tmp / "cut" / "model-last.pth").is_file() and not (in_tmp / "cut" / "result.json").exists()
    monkeypatch.setattr(CheckpointMixin, "_save_last_checkpoint", save)
    trained = []
    train_epoch = MMSSLTrainer._train_epoch
    monkeypatch.setattr(MMSSLTrainer, "_train_epoch", lambda self, data, epoch, **k: trained.append(epoch) or
                        train_epoch(self, data, epoch, **k))
    resumed = run_one(run, "toy", 7, in_tmp / "cut", overrides=overrides)
    assert trained == [1]  # only the epoch after the last checkpoint
    assert resumed["test"] == whole["test"] and resumed["valid"] == whole["valid"]
    assert resumed["epochs"] == whole["epochs"] == 2 and not (in_tmp / "cut" / "model-last.pth").exists()


def test_finished_checkpoints_compare_without_training(toy_multimodal, in_tmp):
    config, _, _ = toy_multimodal
    overrides = {**{k: v for k, v in config.items() if k != "dataset"}, **TINY}
    results = [run_one(RunSpec(m, m), "toy", 7, in_tmp / m, overrides=overrides) for m in ("BPR", "LightGCN")]
    main(["--checkpoints", f"bpr={in_tmp / 'BPR' / 'model.pth'}", str(in_tmp / "LightGCN" / "model.pth"),
          "--output", str(in_tmp / "from-files")])
    csv = pd.read_csv(in_tmp / "from-files" / "comparison.csv")
    assert csv["label"].tolist() == ["bpr", "LightGCN"]
    assert csv["test/recall@20"].tolist() == pytest.approx([r["test"]["recall@20"] for r in results])
    assert csv["best_epoch"].tolist() == [r["best_epoch"] for r in results]


def test_runs_side_by_side_through_ray_give_the_same_results(toy_multimodal, in_tmp):
    pytest.importorskip("ray")
    config, _, _ = toy_multimodal
    overrides = {**{k: v for k, v in config.items() if k != "dataset"}, **TINY}
    specs = [RunSpec("BPR", "BPR")]
    here, _, _ = compare(specs, "toy", [7, 8], in_tmp / "here", overrides=overrides)
    ray_table, _, _ = compare(specs, "toy", [7, 8], in_tmp / "ray", overrides=overrides, parallel=True,
                              cpus_per_trial=1, max_concurrent_trials=2)
    columns = [c for c in here.columns if c.startswith(("test/", "valid/"))] + ["seed", "best_epoch"]
    assert ray_table[columns].equals(here[columns])
    assert (in_tmp / "ray" / "BPR" / "seed-8" / "result.json").is_file()


def test_command_line_on_bundled_tiktok(tmp_path):
    """The README's smallest comparison: two models, two seeds, one epoch each, two at a time through
    Ray (which must rebuild the command line's run descriptions in its workers)."""
    pytest.importorskip("ray")
    out = subprocess.run([sys.executable, "-m", "recbole_mmssl.compare", "--models", "LightGCN", "Pop",
                          "--dataset", "tiktok", "--n_seeds", "2", "--epochs=1", "--output", str(tmp_path / "cmp"),
                          "--parallel", "--max_concurrent_trials=2"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=600,
                         env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0"})
    assert out.returncode == 0, out.stderr[-3000:]
    markdown = (tmp_path / "cmp" / "comparison.md").read_text()
    assert "seeds 2022, 2023" in markdown and " ± " in markdown
    assert "| Pop | 6130 |" in markdown and "Wilcoxon p" in markdown  # 6,130 test users with training items
    csv = pd.read_csv(tmp_path / "cmp" / "comparison.csv")
    assert list(zip(csv["label"], csv["seed"])) == [("LightGCN", 2022), ("LightGCN", 2023), ("Pop", 2022), ("Pop", 2023)]
    assert is_picture(tmp_path / "cmp" / "comparison.png")


def test_comparison_across_datasets(tmp_path, in_tmp):
    """Two generated datasets: each gets its own comparison folder, and the across-datasets table
    repeats their means, sds and p-values, with wins, ties, losses and mean ranks worked out here."""
    from conftest import toy_splits, write_dataset
    from recbole_mmssl.experiments.compare import compare_datasets

    for name, seed in (("toya", 0), ("toyb", 5)):
        write_dataset(tmp_path / "data", name, toy_splits(seed=seed))
    overrides = {"data_path": str(tmp_path / "data"), "USER_ID_FIELD": "user_id", "ITEM_ID_FIELD": "item_id",
                 "load_col": {"inter": ["user_id", "item_id"]}, "benchmark_filename": ["train", "valid", "test"],
                 **TINY}
    runs = [RunSpec("BPR", "BPR"), RunSpec("Pop", "Pop"), RunSpec("LightGCN", "LightGCN")]
    detail, overall = compare_datasets(runs, ["toya", "toyb"], [7, 8], in_tmp / "out", overrides=overrides)
    out = in_tmp / "out"
    assert (out / "across_datasets.md").is_file() and (out / "across_datasets.csv").is_file()
    ranks = {label: [] for label in ("BPR", "Pop", "LightGCN")}
    record = {label: {"wins": 0, "ties": 0, "losses": 0} for label in ("Pop", "LightGCN")}
    for name in ("toya", "toyb"):
        csv = pd.read_csv(out / name / "comparison.csv")
        assert (out / name / "BPR" / "seed-8" / "result.json").is_file()
        means = {label: csv[csv["label"] == label]["test/recall@20"].mean() for label in ranks}
        order = sorted(means.values(), reverse=True)
        for label, value in means.items():
            ranks[label].append(np.mean([k + 1 for k, v in enumerate(order) if v == value]))
            row = detail[(detail["run"] == label) & (detail["dataset"] == name)].iloc[0]
            values = csv[csv["label"] == label]["test/recall@20"]
            assert row["test/recall@20"] == f"{values.mean():.4f} ± {values.std(ddof=1):.4f}"
        per_user = {label: [dict(np.load(out / name / label / f"seed-{s}" / "test_users.npz")) for s in (7, 8)]
                    for label in ranks}
        base = np.mean([r["recall@20"] for r in per_user["BPR"]], axis=0)  # users in one order in every run
        for label in ("Pop", "LightGCN"):
            assert all((r["users"] == per_user["BPR"][0]["users"]).all() for r in per_user[label])
            other = np.mean([r["recall@20"] for r in per_user[label]], axis=0)
            p = stats.ttest_rel(other, base).pvalue if np.any(other != base) else 1.0
            row = detail[(detail["run"] == label) & (detail["dataset"] == name)].iloc[0]
            assert row["recall@20 p"] == pytest.approx(p)
            record[label]["ties" if not p < 0.05 else "wins" if np.mean(other - base) > 0 else "losses"] += 1
    overall = overall.set_index("run")
    for label in ranks:
        assert overall.loc[label, "mean rank"] == pytest.approx(np.mean(ranks[label]))
    for label, counts in record.items():
        assert {k: int(overall.loc[label, k]) for k in counts} == counts


def test_across_datasets_stops_on_a_bad_configuration_before_training(tmp_path, in_tmp):
    from conftest import toy_splits, write_dataset
    from recbole_mmssl.errors import InputError
    from recbole_mmssl.experiments.compare import compare_datasets

    write_dataset(tmp_path / "data", "toya", toy_splits())
    overrides = {"data_path": str(tmp_path / "data"), "USER_ID_FIELD": "user_id", "ITEM_ID_FIELD": "item_id",
                 "load_col": {"inter": ["user_id", "item_id"]}, "benchmark_filename": ["train", "valid", "test"],
                 **TINY}
    with pytest.raises(InputError):
        compare_datasets([RunSpec("BPR", "BPR"), RunSpec("Bad", "NoSuchModel")], ["toya", "toya"], [7],
                         in_tmp / "out", overrides=overrides)
    assert not (in_tmp / "out").exists()


def test_command_line_across_tiktok_and_ml100k(tmp_path):
    """The issue's check: two models, one seed, one epoch, on the bundled TikTok and a freshly built
    MovieLens-100k (genre features only: these models read none)."""
    built = subprocess.run([sys.executable, "-m", "recbole_mmssl.data.prepare", "ml-100k", "--out",
                            str(tmp_path / "dataset"), "--modalities", "genre"],
                           cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert built.returncode == 0, built.stderr[-2000:]
    out = subprocess.run([sys.executable, "-m", "recbole_mmssl.compare", "--models", "LightGCN", "Pop",
                          "--datasets", "tiktok", "ml-100k", "--n_seeds", "1", "--epochs=1",
                          "--output", str(tmp_path / "cmp")], cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    table = pd.read_csv(tmp_path / "cmp" / "across_datasets.csv")
    assert list(zip(table["run"], table["dataset"])) == [("LightGCN", "tiktok"), ("Pop", "tiktok"),
                                                         ("LightGCN", "ml-100k"), ("Pop", "ml-100k")]
    for name in ("tiktok", "ml-100k"):
        csv = pd.read_csv(tmp_path / "cmp" / name / "comparison.csv")
        for label in ("LightGCN", "Pop"):
            row = table[(table["run"] == label) & (table["dataset"] == name)].iloc[0]
            mean = float(str(row["test/recall@20"]).split(" ± ")[0])  # one seed: the mean alone
            assert mean == pytest.approx(csv[csv["label"] == label]["test/recall@20"].iloc[0], abs=5e-5)
    assert "mean rank" in (tmp_path / "cmp" / "across_datasets.md").read_text()
