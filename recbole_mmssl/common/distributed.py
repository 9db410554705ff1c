"""Multi-process training with torch.distributed: gloo on CPU, NCCL on CUDA.

RecBole 1.2.1's own set-up hard-codes NCCL and CUDA devices and wraps the model in
DistributedDataParallel, which fits neither MMSSL's two optimizers nor CPU training. The plugin
therefore spawns the processes (:func:`spawn`, RecBole's flags ``nproc``, ``world_size``,
``ip``, ``port``, ``offset``), joins them (:func:`init_process_group`, from the Config) and
keeps RecBole's own DDP machinery off (``single_spec`` stays True).

How MMSSL's work is split (:class:`recbole_mmssl.trainer.MMSSLTrainer`): every rank draws the
same batch of ``train_batch_size`` users and keeps its contiguous share (:func:`shard`); its
losses are weighted by that share and the gradients of both optimizers are summed over the
ranks (:func:`sum_gradients`), so a step equals the one-process step on the whole batch. The
contrastive loss reads every rank's rows (:func:`gather`, differentiable) and the modality
graphs every rank's top-k pairs (:func:`gather_pairs`). Evaluation and checkpoints happen on
rank 0. Without an initialised process group every helper is the identity.
"""

import os
from logging import getLogger

import torch
import torch.distributed as dist

from recbole_mmssl.errors import InputError


def active():
    """Whether this process was joined to a process group by :func:`init_process_group` (a
    group of one, ``world_size`` 1, trains as a rank would: the reference for several)."""
    return dist.is_available() and dist.is_initialized()


def rank():
    return dist.get_rank() if active() else 0


def world_size():
    return dist.get_world_size() if active() else 1


def is_main():
    """Rank 0: the process that evaluates, writes checkpoints and logs."""
    return rank() == 0


def check_model(config):
    """Refuse models that do not split their batches over ranks."""
    if not getattr(config.model_class, "supports_distributed", False):
        raise InputError(f"--nproc/--world_size: multi-process training is built for MMSSL, not {config['model']}; "
                         "run it in one process.")


def init_process_group(config):
    """Join the process group named by ``config`` (``local_rank`` set by :func:`spawn`) and set
    ``config['device']``: ``cuda:<local_rank>`` with NCCL where CUDA is available and
    ``gpu_id`` names GPUs, else the CPU with gloo."""
    check_model(config)
    local_rank, nproc = config["local_rank"], config["nproc"]
    use_cuda = torch.cuda.is_available() and len(config["gpu_id"]) > 0
    if use_cuda and torch.cuda.device_count() < nproc:
        raise InputError(f"nproc is {nproc} but gpu_id {config['gpu_id']!r} shows {torch.cuda.device_count()} GPUs; "
                         "list one GPU per process in gpu_id, or run on the CPU with gpu_id ''.")
    device = torch.device("cuda", local_rank) if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo",
                                init_method=f"tcp://{config['ip']}:{config['port']}",
                                rank=local_rank + config["offset"], world_size=config["world_size"])
    config["device"] = device
    config["single_spec"] = True  # RecBole's DDP path (its samplers, wrapper and metric reduction) stays off
    if dist.get_rank() != 0:
        config["state"] = "error"
        config["show_progress"] = False
        config["verbose"] = False


def share_sizes(n):
    """The rows of each rank's :func:`shard` of ``n`` rows (they differ by at most one)."""
    return [len(part) for part in torch.arange(n).tensor_split(world_size())]


def shard(n):
    """The slice of ``n`` batch rows that this rank trains on: contiguous, in rank order."""
    sizes = share_sizes(n)
    start = sum(sizes[:rank()])
    return slice(start, start + sizes[rank()])


def broadcast(tensors):
    """Copy rank 0's values of ``tensors`` (parameters, buffers) to every rank."""
    if active():
        for tensor in tensors:
            dist.broadcast(tensor.data, 0)


def broadcast_object(obj):
    """Rank 0's ``obj`` (any picklable value) on every rank."""
    if not active():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, 0)
    return box[0]


def sum_gradients(parameters):
    """Sum the gradients of ``parameters`` over the ranks (one flat all-reduce); a missing
    gradient counts as zero."""
    if not active():
        return
    parameters = [p for p in parameters if p.requires_grad]
    for p in parameters:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    flat = torch.cat([p.grad.reshape(-1) for p in parameters])
    dist.all_reduce(flat)
    offset = 0
    for p in parameters:
        p.grad.copy_(flat[offset:offset + p.numel()].view_as(p.grad))
        offset += p.numel()


def sum_over_ranks(tensor):
    """The element-wise sum of ``tensor`` over the ranks."""
    if active():
        tensor = tensor.clone()
        dist.all_reduce(tensor)
    return tensor


def _gather_rows(tensor):
    """Every rank's rows of ``tensor`` (their number may differ by rank) in rank order, and the counts."""
    counts = torch.zeros(world_size(), dtype=torch.long, device=tensor.device)
    counts[rank()] = len(tensor)
    dist.all_reduce(counts)
    counts = counts.tolist()
    padded = tensor.new_zeros((max(counts), *tensor.shape[1:]))
    padded[:len(tensor)] = tensor
    parts = [torch.empty_like(padded) for _ in counts]
    dist.all_gather(parts, padded.contiguous())
    return torch.cat([part[:count] for part, count in zip(parts, counts)]), counts


class _Gather(torch.autograd.Function):
    """All ranks' rows in rank order; the backward pass sends each rank the summed gradient of its rows."""

    @staticmethod
    def forward(ctx, tensor):
        rows, ctx.counts = _gather_rows(tensor)
        return rows

    @staticmethod
    def backward(ctx, grad):
        grad = grad.contiguous().clone()
        dist.all_reduce(grad)
        start = sum(ctx.counts[:rank()])
        return grad[start:start + ctx.counts[rank()]]


def gather(tensor):
    """Every rank's rows of ``tensor``, concatenated in rank order, with autograd."""
    return _Gather.apply(tensor) if active() else tensor


def gather_pairs(users, tops):
    """Every rank's (users, top-k columns) rows, in rank order, without autograd."""
    if not active():
        return users, tops
    rows, _ = _gather_rows(torch.cat([users.unsqueeze(1), tops], dim=1))
    return rows[:, 0], rows[:, 1:]


def spawn(worker, nproc, world_size=-1, ip="localhost", port="5678", group_offset=0, args=()):
    """Run ``worker(local_rank, distributed_config, *args)`` in ``nproc`` new processes; the
    config dict holds RecBole's keys ``local_rank``, ``nproc``, ``world_size``, ``ip``, ``port``
    and ``offset``. Returns what rank 0's worker returned."""
    import torch.multiprocessing as mp
    from torch.multiprocessing.spawn import ProcessException

    world_size = nproc if world_size == -1 else world_size
    if nproc < 1 or world_size < nproc + group_offset:
        raise InputError(f"nproc {nproc}, world_size {world_size} and group_offset {group_offset} do not fit: "
                         "this machine's ranks offset .. offset + nproc - 1 must lie below world_size.")
    queue = mp.get_context("spawn").SimpleQueue()
    settings = {"nproc": nproc, "world_size": world_size, "ip": ip, "port": str(port), "offset": group_offset}
    threads = os.environ.get("OMP_NUM_THREADS")
    if threads is None:  # the processes share this machine's cores
        os.environ["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // nproc))
    try:
        mp.spawn(_run_worker, args=(worker, settings, queue, args), nprocs=nproc, join=True)
    except ProcessException:
        while not queue.empty():
            outcome = queue.get()
            if isinstance(outcome, InputError):  # the user's mistake, found in a process: say it as in one
                raise outcome from None
        raise
    finally:
        if threads is None:
            del os.environ["OMP_NUM_THREADS"]
    return None if queue.empty() else queue.get()


def _run_worker(local_rank, worker, settings, queue, args):
    try:
        result = worker(local_rank, {**settings, "local_rank": local_rank}, *args)
        if local_rank == 0 and settings["offset"] == 0:
            queue.put(result)
    except InputError as error:
        queue.put(InputError(str(error)))
        raise
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def log_split(batch_size):
    """Say in the log how a batch's work is split over the ranks."""
    backend = dist.get_backend()
    getLogger().info(f"Distributed training: {world_size()} processes, {backend} on "
                     f"{'cuda' if backend == 'nccl' else 'cpu'}; each batch of {batch_size} users is split into "
                     f"{' + '.join(map(str, share_sizes(batch_size)))} users by rank; the gradients of both "
                     "optimizers are summed over the ranks; evaluation and checkpoints on rank 0.")
