"""Speed and memory benchmark of MMSSL and the multimodal baselines (run by hand, not by CI).

    python benchmarks/benchmark.py                      # every model, tiktok and amazon-baby, CPU (and GPU)
    python benchmarks/benchmark.py --models MMSSL --scales tiktok --precisions fp32 bf16 --batches 5
    python benchmarks/benchmark.py --models VBPR LATTICE FREEDOM BM3 --scales amazon-baby
    python benchmarks/benchmark.py --models MMSSL --n_items 10000 100000 --precisions fp32 --discriminator exact sampled
    python benchmarks/benchmark.py --cost --variant improved --scales tiktok ml-100k [--to_best]

For each scale, device and precision (each in a fresh process, so peak memory is its own):
per-batch time of the discriminator step and of the recommender step (``--discriminator``:
exact, the reference's I-wide critic, and/or sampled, the set critic), one full-ranking
validation pass, the estimated epoch time, peak memory, and two yardsticks measured in the
same process:
* the floor: the discriminator's dense layers alone (same shapes, same autograd program:
  three critic forwards, the gradient penalty's double backward, the generator forward and
  input gradient), without BatchNorm, dropout, activations or anything else;
* RecBole's LightGCN: one training epoch on the same data.
For each baseline (VBPR, LATTICE, FREEDOM, BM3; float32): the seconds to build the model (its
kNN item graphs), one measured training epoch (its per-epoch work included), one full-ranking
validation pass and the peak memory, each model in a fresh process.
Scales: ``tiktok`` is the bundled real data; ``amazon-baby`` is Amazon-Baby's real split
with RANDOM features of the real shapes (4096-d image, 1024-d text), labelled synthetic.
``--n_items N``: a synthetic catalog of N items (10k: 20k users and 200k interactions; 100k:
50k and 1M; 1M: 100k and 2M; Zipf popularity, two 128-d random features; see
``recbole_mmssl.data.synthetic``). A configuration whose model alone would not fit in
``--max_gb`` (MMSSL's I x I/4 discriminator with its gradients and Adam moments) is reported as
skipped instead of run.
``--cost``: MMSSL's epoch (``--variant``, float32) against LightGCN's at MMSSL's batch size
(``train_batch_size`` interactions a batch, so both take about the same number of steps), both
measured on the same machine in one process, with their ratio; ``--to_best`` also trains both
with early stopping and reports the seconds to each one's best validation epoch (LightGCN with
the dataset's ``model_settings: LightGCN:``, the tuned values where there are some).
Prints a table and writes JSON (``--out``).
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # the checkout's package, also where it is not installed
from recbole_mmssl.config import Config  # noqa: E402
from recbole_mmssl.data.synthetic import dataset_config, synthetic_catalog  # noqa: E402
from recbole_mmssl.errors import add_debug_flag, reported_input_errors  # noqa: E402
from recbole_mmssl.quick_start import build_model, build_trainer, prepare_data  # noqa: E402
from recbole_mmssl.utils import get_trainer  # noqa: E402

SCALES = {
    "tiktok": {"dataset": "tiktok", "synthetic": False},
    "ml-100k": {"dataset": "ml-100k", "synthetic": False},  # built by python -m recbole_mmssl.data.prepare ml-100k
    "amazon-baby": {"dataset": "amazon-baby", "synthetic": True, "dims": {"image": 4096, "text": 1024}},
}


def synthetic_baby(root):
    """Amazon-Baby's real interactions plus random features of the real shapes."""
    src = REPO / "dataset" / "amazon-baby"
    folder = Path(root) / "amazon-baby"
    folder.mkdir(parents=True, exist_ok=True)
    for phase in ("train", "valid", "test"):
        (folder / f"amazon-baby.{phase}.inter").write_bytes((src / f"amazon-baby.{phase}.inter").read_bytes())
    tokens = (src / "amazon-baby.feature_items").read_text()
    (folder / "amazon-baby.feature_items").write_text(tokens)
    rng = np.random.default_rng(0)
    for modality, dim in SCALES["amazon-baby"]["dims"].items():
        np.save(folder / f"amazon-baby.{modality}.npy",
                rng.random((len(tokens.split()), dim), dtype=np.float32))
    return str(root)


def scale_info(scale):
    """The dataset name, config keys and labels of a scale (``synthetic-N`` for a synthetic catalog)."""
    if scale in SCALES:
        return {**SCALES[scale], "config": {}}
    return {"dataset": scale, "synthetic": True, "config": dataset_config(scale)}


def discriminator_gb(n_items):
    """Memory of MMSSL's exact discriminator: weights, gradients and two Adam moments, float32."""
    return 4 * 4 * (n_items * (n_items // 4) + (n_items // 4) * (n_items // 8)) / 1e9


def memory_gb():
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1e9


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, device, repeats):
    fn()
    sync(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def floor_program(model, batch_users, device, bf16):
    """The discriminator's Linear layers alone, run through the same autograd program."""
    disc = model.discriminator
    weights = [m for m in disc.layers if isinstance(m, torch.nn.Linear)]
    rows = len(model.modalities) * batch_users
    fake = torch.rand(rows, model.n_real_items, device=device)
    real = torch.rand(rows, model.n_real_items, device=device)
    mixed = torch.rand(rows, model.n_real_items, device=device)
    gen = torch.rand(rows, model.n_real_items, device=device, requires_grad=True)

    def bare(x):
        for linear in weights:
            x = linear(x)
        return x

    def step():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            leaf = mixed.clone().requires_grad_(True)
            (grad,) = torch.autograd.grad(bare(leaf).sum(), leaf, create_graph=True)
            loss = bare(fake).mean() - bare(real).mean() + grad.norm(2, dim=1).mean()
        loss.backward()
        disc.requires_grad_(False)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            gen_loss = bare(gen).mean()
        gen_loss.backward()
        disc.requires_grad_(True)
        disc.zero_grad(set_to_none=True)

    return step


def lightgcn_epoch(dataset, data_path, device, dataset_keys):
    config = Config(model="LightGCN", dataset=dataset, config_dict={
        "state": "ERROR", "show_progress": False, "data_path": data_path, **dataset_keys,
        "gpu_id": "0" if device.type == "cuda" else ""})
    _, (train, _, _) = prepare_data(config)
    return second_epoch_seconds(build_trainer(config, train), train, device)


def second_epoch_seconds(trainer, train, device):
    """The seconds of a training epoch after a first one (which warms caches and allocators up)."""
    trainer._train_epoch(train, 0)
    sync(device)
    start = time.perf_counter()
    trainer._train_epoch(train, 1)
    sync(device)
    return time.perf_counter() - start


def measure(scale, device_name, precision, batches, data_path, discriminator="exact", steps_only=False,
            full_epoch=False, shared_forward=False, variant="reference"):
    """One configuration, in this process; with ``full_epoch`` also one whole training epoch, timed.
    With ``shared_forward`` the recommender step is timed as (both steps) - (discriminator step),
    since it reuses the discriminator step's forward."""
    device = torch.device(device_name)
    info = scale_info(scale)
    config = Config(model="MMSSL", dataset=info["dataset"], config_dict={
        "state": "ERROR", "show_progress": False, "data_path": data_path, **info["config"],
        "discriminator": discriminator, "shared_forward": shared_forward, "variant": variant,
        "gpu_id": "0" if device.type == "cuda" else "", "mixed_precision": "bf16" if precision == "bf16" else None})
    _, (train, valid, _) = prepare_data(config)
    trainer = build_trainer(config, train)
    model = trainer.model
    model.train()
    model.start_epoch()
    batch = next(iter(train)).to(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    d_step = timed(lambda: trainer._discriminator_step(batch), device, batches)
    if shared_forward:
        g_step = timed(lambda: (trainer._discriminator_step(batch), trainer._recommender_step(batch)),
                       device, batches) - d_step
    else:
        g_step = timed(lambda: trainer._recommender_step(batch), device, batches)
    evaluation = (None if steps_only else
                  timed(lambda: (model.train(False), trainer.evaluate(valid, load_best_model=False)), device, 1))
    floor = (timed(floor_program(model, train._batch_size, device, precision == "bf16"), device, batches)
             if discriminator == "exact" and not steps_only else None)
    trained = None
    if full_epoch:
        start = time.perf_counter()
        trainer._train_epoch(train, 0)
        sync(device)
        trained = time.perf_counter() - start
    peak = (torch.cuda.max_memory_allocated() if device.type == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    lightgcn = None if steps_only else lightgcn_epoch(info["dataset"], data_path, device, info["config"])
    epoch = (trained if full_epoch else len(train) * (d_step + g_step)) + (evaluation or 0)
    return {
        "scale": scale, "synthetic_features": info["synthetic"], "device": device_name,
        "device_name": torch.cuda.get_device_name() if device.type == "cuda" else cpu_name(),
        "precision": precision, "threads": torch.get_num_threads(), "users": model.n_users - 1,
        "items": model.n_real_items, "batches_per_epoch": len(train), "batch_users": train._batch_size,
        "discriminator": discriminator, "shared_forward": shared_forward,
        "discriminator_parameters": sum(p.numel() for p in model.discriminator.parameters()),
        "d_step_s": d_step, "g_step_s": g_step, "batch_s": d_step + g_step, "floor_s": floor,
        "batch_over_floor": (d_step + g_step) / floor if floor else None, "eval_s": evaluation, "epoch_s": epoch,
        "epoch_measured": full_epoch,
        "lightgcn_epoch_s": lightgcn, "epoch_over_lightgcn": epoch / lightgcn if lightgcn else None,
        "peak_memory_gb": peak / 1e9, "peak_memory_kind": "GPU allocated" if device.type == "cuda" else "process RSS",
    }


def measure_cost(scale, variant, data_path, device_name, to_best=False, epochs=None):
    """MMSSL's epoch against LightGCN's at MMSSL's batch size (one warm-up epoch each, then one timed);
    with ``to_best``, both trained with early stopping and their seconds to the best validation epoch."""
    device = torch.device(device_name)
    info = scale_info(scale)
    common = {"state": "ERROR", "show_progress": False, "data_path": data_path, **info["config"],
              "gpu_id": "0" if device.type == "cuda" else "", **({"epochs": epochs} if epochs else {})}
    mmssl = Config(model="MMSSL", dataset=info["dataset"], config_dict={**common, "variant": variant})
    batch_size = mmssl["train_batch_size"]
    lightgcn = Config(model="LightGCN", dataset=info["dataset"], config_dict={**common, "train_batch_size": batch_size})
    row = {"scale": scale, "variant": variant, "device": device_name, "threads": torch.get_num_threads(),
           "batch_size": batch_size}
    for name, config in (("mmssl", mmssl), ("lightgcn", lightgcn)):
        _, (train, valid, _) = prepare_data(config)
        row[f"{name}_epoch_s"] = second_epoch_seconds(build_trainer(config, train), train, device)
        row[f"{name}_batches"] = len(train)
        if to_best:
            trainer = build_trainer(config, train)
            trainer.fit(train, valid, saved=False, verbose=False)
            done = [r for r in trainer.epoch_records if r["epoch"] <= trainer.best_epoch]
            row.update({f"{name}_best_epoch": trainer.best_epoch, f"{name}_best_valid": trainer.best_valid_score,
                        f"{name}_seconds_to_best": sum(r["train_seconds"] + r.get("valid_seconds", 0) for r in done)})
    row["epoch_ratio"] = row["mmssl_epoch_s"] / row["lightgcn_epoch_s"]
    return row


def cost_table(results):
    head = ("scale", "variant", "batch", "MMSSL epoch", "LightGCN epoch", "ratio", "MMSSL to best", "LightGCN to best")
    lines = [" | ".join(head), " | ".join("---" for _ in head)]
    for r in results:
        best = [f"{r[f'{m}_seconds_to_best']:.0f}s (epoch {r[f'{m}_best_epoch']}, valid {r[f'{m}_best_valid']:.4f})"
                if f"{m}_seconds_to_best" in r else "-" for m in ("mmssl", "lightgcn")]
        lines.append(" | ".join([r["scale"], r["variant"], str(r["batch_size"]), f"{r['mmssl_epoch_s']:.2f}s",
                                 f"{r['lightgcn_epoch_s']:.2f}s", f"{r['epoch_ratio']:.2f}", *best]))
    return "\n".join(lines)


BASELINES = ("VBPR", "LATTICE", "FREEDOM", "BM3")


def measure_baseline(model_name, scale, device_name, data_path):
    """Build time, one training epoch, one validation pass and peak memory of a baseline, in this process."""
    device = torch.device(device_name)
    info = scale_info(scale)
    config = Config(model=model_name, dataset=info["dataset"], config_dict={
        "state": "ERROR", "show_progress": False, "data_path": data_path, **info["config"],
        "gpu_id": "0" if device.type == "cuda" else ""})
    _, (train, valid, _) = prepare_data(config)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    model = build_model(config, train)
    sync(device)
    build = time.perf_counter() - start
    trainer = get_trainer(config["MODEL_TYPE"], model_name)(config, model)
    start = time.perf_counter()
    trainer._train_epoch(train, 0)
    sync(device)
    epoch = time.perf_counter() - start
    evaluation = timed(lambda: (model.train(False), trainer.evaluate(valid, load_best_model=False)), device, 1)
    peak = (torch.cuda.max_memory_allocated() if device.type == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    return {
        "model": model_name, "scale": scale, "synthetic_features": info["synthetic"], "device": device_name,
        "device_name": torch.cuda.get_device_name() if device.type == "cuda" else cpu_name(),
        "threads": torch.get_num_threads(), "users": model.n_users - 1, "items": model.n_items - 1,
        "batches_per_epoch": len(train), "build_s": build, "epoch_s": epoch, "eval_s": evaluation,
        "peak_memory_gb": peak / 1e9, "peak_memory_kind": "GPU allocated" if device.type == "cuda" else "process RSS",
    }


def baseline_table(results):
    head = ("model", "scale", "device", "build", "train epoch", "eval", "peak GB")
    lines = [" | ".join(head), " | ".join("---" for _ in head)]
    for r in results:
        scale = r["scale"] + (" (synthetic features)" if r["synthetic_features"] else "")
        lines.append(" | ".join([r["model"], scale, r["device"], f"{r['build_s']:.1f}s", f"{r['epoch_s']:.1f}s",
                                 f"{r['eval_s']:.2f}s", f"{r['peak_memory_gb']:.2f}"]))
    return "\n".join(lines)


def catalog(scale, tmp):
    """The data_path of a scale: the bundled data, Amazon-Baby with random features, or a synthetic catalog."""
    if scale.startswith("synthetic-"):
        synthetic_catalog(tmp, int(scale.split("-")[1]))
        return tmp
    return synthetic_baby(tmp) if SCALES[scale]["synthetic"] else str(REPO / "dataset")


def run_one(args, data_path, tmp, flags=()):
    """The JSON result of one measurement in a fresh process, or None (its error printed)."""
    cmd = [sys.executable, __file__, "--batches", str(args[0]), "--one", *args[1:], data_path, *flags]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp, env=dict(os.environ))
    if out.returncode != 0:
        print(f"{' '.join(args[1:])} failed:\n{out.stderr[-2000:]}", file=sys.stderr)
        return None
    return json.loads(out.stdout.strip().splitlines()[-1])


def native_precisions(device):
    """fp32, plus bf16 where ``device`` has it in hardware (emulated bf16 would only measure the emulation)."""
    native = device.startswith("cuda") or getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)()
    return ["fp32", "bf16"] if native else ["fp32"]


def cpu_name():
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "cpu"


def table(results):
    head = ("scale", "device", "prec", "critic", "D step", "G step", "batch", "floor", "x floor", "eval", "epoch",
            "LightGCN", "x LGCN", "peak GB")
    lines = [" | ".join(head), " | ".join("---" for _ in head)]
    for r in results:
        scale = r["scale"] + (" (synthetic features)" if r["synthetic_features"] else "")
        floor = (f"{r['floor_s']:.3f}s", f"{r['batch_over_floor']:.2f}") if r["floor_s"] else ("-", "-")
        critic = f"{r['discriminator']} ({r['discriminator_parameters']:,})" + (
            ", shared forward" if r.get("shared_forward") else "")
        lines.append(" | ".join([
            scale, r["device"], r["precision"], critic,
            f"{r['d_step_s']:.3f}s", f"{r['g_step_s']:.3f}s", f"{r['batch_s']:.3f}s", *floor,
            f"{r['eval_s']:.2f}s" if r["eval_s"] is not None else "-",
            f"{r['epoch_s']:.1f}s" + ("" if r.get("epoch_measured") else " (est.)"),
            *((f"{r['lightgcn_epoch_s']:.2f}s", f"{r['epoch_over_lightgcn']:.0f}")
              if r["lightgcn_epoch_s"] else ("-", "-")),
            f"{r['peak_memory_gb']:.2f}"]))
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["MMSSL", *BASELINES], choices=["MMSSL", *BASELINES])
    parser.add_argument("--scales", nargs="+", default=list(SCALES), choices=list(SCALES))
    parser.add_argument("--n_items", nargs="+", type=int, default=[],
                        help="synthetic catalogs of these sizes (10000, 100000, 1000000), instead of --scales")
    parser.add_argument("--max_gb", type=float, default=memory_gb(), help="skip what would not fit (default: RAM)")
    parser.add_argument("--devices", nargs="+", default=["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
    parser.add_argument("--precisions", nargs="+", choices=["fp32", "bf16"],
                        help="default: fp32, and bf16 where the device computes it natively (a GPU, a CPU with AVX-512 BF16)")
    parser.add_argument("--batches", type=int, default=3, help="timed repetitions per step (median)")
    parser.add_argument("--out", default="benchmark_results.json")
    parser.add_argument("--discriminator", nargs="+", default=["exact"], choices=["exact", "sampled"],
                        help="MMSSL's discriminator(s) to measure")
    parser.add_argument("--steps_only", action="store_true",
                        help="MMSSL: time the training steps only (no validation pass, floor or LightGCN)")
    parser.add_argument("--full_epoch", action="store_true",
                        help="MMSSL: also train one whole epoch and report its time (not an estimate) and peak memory")
    parser.add_argument("--shared_forward", action="store_true",
                        help="MMSSL: one recommender forward per batch for both steps (config key shared_forward)")
    parser.add_argument("--variant", default="reference", choices=["reference", "paper", "improved"],
                        help="MMSSL's preset (default: reference)")
    parser.add_argument("--cost", action="store_true",
                        help="MMSSL's epoch against LightGCN's at MMSSL's batch size, in this process")
    parser.add_argument("--to_best", action="store_true", help="--cost: also train both to their best validation epoch")
    parser.add_argument("--epochs", type=int, default=None, help="--to_best: the most epochs (default: the config's)")
    parser.add_argument("--one", nargs=6, metavar=("MODEL", "SCALE", "DEVICE", "PRECISION", "DISCRIMINATOR",
                                                   "DATA_PATH"), help=argparse.SUPPRESS)
    add_debug_flag(parser)
    args = parser.parse_args()
    unusable = [d for d in args.devices if d not in ("cpu", "cuda") or (d == "cuda" and not torch.cuda.is_available())]
    if unusable:
        parser.error(f"--devices {' '.join(unusable)}: this machine measures on cpu"
                     + (" and cuda" if torch.cuda.is_available() else " only (no CUDA device is available)"))
    with reported_input_errors(args.debug):
        run(args)


def run(args):
    """The measurements that ``args`` ask for."""
    if args.cost:
        results = []
        with tempfile.TemporaryDirectory() as tmp:
            for scale in args.scales:
                for device in args.devices:
                    results.append(measure_cost(scale, args.variant, catalog(scale, tmp), device, args.to_best,
                                                args.epochs))
                    print(cost_table(results[-1:]).splitlines()[-1], flush=True)
        print(cost_table(results))
        Path(args.out).write_text(json.dumps(results, indent=2))
        print(f"wrote {args.out}")
        return
    if args.one:
        model, scale, device, precision, discriminator, data_path = args.one
        result = (measure(scale, device, precision, args.batches, data_path, discriminator, args.steps_only,
                          args.full_epoch, args.shared_forward, args.variant)
                  if model == "MMSSL"
                  else measure_baseline(model, scale, device, data_path))
        print(json.dumps(result))
        return
    mmssl, baselines = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for scale in [f"synthetic-{n}" for n in args.n_items] or args.scales:
            data_path = catalog(scale, tmp)
            for device in args.devices:
                for model in args.models:
                    n_items = int(scale.split("-")[1]) if scale.startswith("synthetic-") else 0
                    precisions = args.precisions or native_precisions(device)
                    runs = ([(p, d) for p in precisions for d in args.discriminator] if model == "MMSSL"
                            else [("fp32", "exact")])
                    for precision, discriminator in runs:
                        if model == "MMSSL" and discriminator == "exact" and discriminator_gb(n_items) > args.max_gb:
                            print(f"{model} {scale}: exact skipped, its discriminator alone needs "
                                  f"{discriminator_gb(n_items):.0f} GB (weights, gradients, Adam moments)")
                            continue
                        flags = [f"--{flag}" for flag in ("steps_only", "full_epoch", "shared_forward")
                                 if getattr(args, flag)] + ["--variant", args.variant]
                        result = run_one([str(args.batches), model, scale, device, precision, discriminator],
                                         data_path, tmp, flags)
                        if result is None:
                            continue
                        kept, render = (mmssl, table) if model == "MMSSL" else (baselines, baseline_table)
                        kept.append(result)
                        print(render([result]).splitlines()[-1], flush=True)
    for kept, render in ((mmssl, table), (baselines, baseline_table)):
        if kept:
            print(render(kept))
    Path(args.out).write_text(json.dumps(mmssl + baselines, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
