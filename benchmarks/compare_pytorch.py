#!/usr/bin/env python3
"""E1 and E5 training steps written in eager PyTorch the way Python users write
them (one nn.Embedding(sparse=True) per field, SparseAdam + Adam, ESMM v2 loss),
with the shapes of benchmarks/bench_training.cpp: batch 1024, 23 sparse fields
with the synthetic Ali-CCP-shaped vocabularies (700k users, 700k items), 8 dense
features, embedding dim 8, DeepFM [256, 128] + FM projection 16, towers [64].
Prints samples/s per model and mode: eager, and with --compile also
torch.compile (inductor, CPU; PyTorch 2.x) of everything after the sparse
lookups, the loss and its backward included (inductor cannot compile sparse
gradients, so the lookups stay eager). Run by benchmarks/race.sh beside the C++ benchmark.

With --serve: E5 in eval mode under torch.inference_mode, as a Python server
scores requests, beside benchmarks/bench_serving (serving_race.sh runs both):
p50/p99 latency and throughput for batch 1, 16, 256 with 1 and 2 concurrent
callers (threads; one intra-op thread). Its requests arrive as id tensors
already encoded, so it skips the vocabulary lookups the C++ side does."""
import argparse
import os
import threading
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

VOCABS = [700000, 98, 14, 3, 8, 4, 4, 3, 5, 700000, 2000, 40000, 30000, 20000, 5000, 20000, 6000, 10000, 3,
          2000, 40000, 20000, 30000]
DIM, DENSE, BATCH = 8, 8, 1024


def mlp(sizes, last_act=True):
    layers = []
    for i in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[i], sizes[i + 1]))
        if i + 2 < len(sizes) or last_act:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class DeepFM(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.ModuleList(nn.Embedding(v, DIM, sparse=True) for v in VOCABS)
        self.lin = nn.ModuleList(nn.Embedding(v, 1, sparse=True) for v in VOCABS)
        self.dense_lin = nn.Linear(DENSE, 1)
        self.deep = mlp([len(VOCABS) * DIM + DENSE, 256, 128])
        self.fm_proj = nn.Linear(DIM + 1, 16)
        self.out_dim = 128 + 16

    def lookup(self, ids):
        """The sparse lookups: the field embeddings and the sum of the first-order weights."""
        e = torch.stack([t(ids[:, i]) for i, t in enumerate(self.emb)], 1)
        return e, sum(t(ids[:, i]) for i, t in enumerate(self.lin))

    def forward(self, e, first_sparse, dense):
        first = first_sparse + self.dense_lin(dense)
        s = e.sum(1)
        second = 0.5 * (s * s - (e * e).sum(1))
        deep = self.deep(torch.cat([e.flatten(1), dense], 1))
        return torch.cat([deep, self.fm_proj(torch.cat([first, second], 1))], 1)


class CrossNet(nn.Module):
    def __init__(self, d, layers):
        super().__init__()
        self.w = nn.ModuleList(nn.Linear(d, d) for _ in range(layers))

    def forward(self, x0):
        x = x0
        for w in self.w:
            x = x0 * w(x) + x
        return x


class Expert(nn.Module):
    def __init__(self, kind, arg, d_in, d_out):
        super().__init__()
        if kind == "mlp":
            self.body, natural = mlp([d_in] + arg), arg[-1]
        else:
            self.body, natural = CrossNet(d_in, arg), d_in
        self.proj = nn.Linear(natural, d_out)

    def forward(self, x):
        return self.proj(self.body(x))


class MultiTask(nn.Module):
    """A model's step in two parts: the sparse lookups (`lookup`) and everything after them (`head`), so
    that torch.compile can take the second: inductor cannot compile sparse gradients."""

    def lookup(self, ids):
        return self.backbone.lookup(ids)

    def forward(self, ids, dense):
        return self.head(*self.lookup(ids), dense)


class E1(MultiTask):
    def __init__(self):
        super().__init__()
        self.backbone = DeepFM()
        self.bottom = mlp([self.backbone.out_dim, 128])
        self.towers = nn.ModuleList(mlp([128, 64, 1], last_act=False) for _ in range(2))

    def head(self, e, first_sparse, dense):
        h = self.bottom(self.backbone(e, first_sparse, dense))
        return [t(h).squeeze(1) for t in self.towers]


class E5(MultiTask):
    def __init__(self):
        super().__init__()
        self.backbone = DeepFM()
        d, e = self.backbone.out_dim, 64
        shared = [("mlp", [128]), ("mlp", [256, 128]), ("cross", 2), ("cross", 3)]
        own = [[("cross", 2)], [("mlp", [64])]]
        self.shared = nn.ModuleList(Expert(k, a, d, e) for k, a in shared)
        self.own = nn.ModuleList(nn.ModuleList(Expert(k, a, d, e) for k, a in o) for o in own)
        self.gates = nn.ModuleList(nn.Linear(d, len(shared) + len(o)) for o in own)
        self.scale = nn.Parameter(torch.ones(len(shared) + sum(len(o) for o in own)))
        self.towers = nn.ModuleList(mlp([e, 64, 1], last_act=False) for _ in range(2))

    def head(self, e, first_sparse, dense):
        x = self.backbone(e, first_sparse, dense)
        outs = [m(x) for m in self.shared] + [m(x) for o in self.own for m in o]
        all_ = F.layer_norm(torch.stack(outs, 1), (outs[0].shape[1],)) * self.scale.view(1, -1, 1)
        n_shared, logits, start = len(self.shared), [], len(self.shared)
        for t, o in enumerate(self.own):
            cand = torch.cat([all_[:, :n_shared], all_[:, start:start + len(o)]], 1)
            start += len(o)
            w = torch.softmax(self.gates[t](x), 1)
            logits.append(self.towers[t]((cand * w.unsqueeze(2)).sum(1)).squeeze(1))
        return logits


def esmm_v2(ctr, cvr, click, conv, lam=0.1):
    ctr_loss = F.binary_cross_entropy_with_logits(ctr, click)
    log_p = F.logsigmoid(ctr) + F.logsigmoid(cvr)
    log_1mp = torch.logaddexp(F.logsigmoid(-ctr), F.logsigmoid(ctr) + F.logsigmoid(-cvr))
    y = click * conv
    ctcvr = -(y * log_p + (1 - y) * log_1mp).mean()
    aux = (F.binary_cross_entropy_with_logits(cvr, conv, reduction="none") * click).sum() / click.sum().clamp_min(1)
    return ctr_loss + ctcvr + lam * aux


def run(model, steps, warmup, compile_model=False):
    sparse = [p for n, p in model.named_parameters() if ".emb." in n or ".lin." in n]
    sparse_ids = {id(p) for p in sparse}
    dense = [p for p in model.parameters() if id(p) not in sparse_ids]
    opt_s, opt_d = torch.optim.SparseAdam(sparse, lr=1e-3), torch.optim.Adam(dense, lr=6e-4)
    g = torch.Generator().manual_seed(0)
    batches = []
    for _ in range(16):
        ids = torch.stack([torch.randint(v, (BATCH,), generator=g) for v in VOCABS], 1)
        click = (torch.rand(BATCH, generator=g) < 0.05).float()
        batches.append((ids, torch.rand(BATCH, DENSE, generator=g), click, click * (torch.rand(BATCH, generator=g) < 0.1).float()))
    if compile_model:  # the head and the loss compiled, the sparse lookups eager
        head_loss = torch.compile(lambda e, first, d, c, v: esmm_v2(*model.head(e, first, d), c, v))
        step_loss = lambda ids, d, c, v: head_loss(*model.lookup(ids), d, c, v)
    else:
        step_loss = lambda ids, d, c, v: esmm_v2(*model(ids, d), c, v)
    for i in range(warmup + steps):
        if i == warmup:
            start = time.perf_counter()
        ids, dense_x, click, conv = batches[i % len(batches)]
        opt_s.zero_grad(), opt_d.zero_grad()
        step_loss(ids, dense_x, click, conv).backward()
        opt_s.step(), opt_d.step()
    return steps * BATCH / (time.perf_counter() - start)


def serve(model, batch, callers, calls, warmup, threads_per_call=1):
    g = torch.Generator().manual_seed(batch)
    pool = [(torch.stack([torch.randint(v, (batch,), generator=g) for v in VOCABS], 1), torch.randn(batch, DENSE, generator=g))
            for _ in range(32)]
    latencies = [[] for _ in range(callers)]
    barrier = threading.Barrier(callers + 1)

    def caller(t):
        try:
            torch.set_num_threads(threads_per_call)
            with torch.inference_mode():
                for i in range(warmup):
                    model(*pool[i % len(pool)])
                barrier.wait()
                for i in range(calls):
                    begin = time.perf_counter()
                    ctr, cvr = model(*pool[(i + t) % len(pool)])
                    p_ctr, p_cvr = torch.sigmoid(ctr), torch.sigmoid(cvr)
                    (p_ctr * p_cvr).tolist()
                    latencies[t].append((time.perf_counter() - begin) * 1e3)
        except BaseException:
            barrier.abort()  # the other callers and the timer stop too, instead of waiting for this one
            raise

    threads = [threading.Thread(target=caller, args=(t,)) for t in range(callers)]
    for th in threads:
        th.start()
    barrier.wait()
    start = time.perf_counter()
    for th in threads:
        th.join()
    seconds = time.perf_counter() - start
    all_ = sorted(x for l in latencies for x in l)
    pick = lambda q: all_[min(len(all_) - 1, int(q * len(all_)))]
    print(f"pytorch_serve batch {batch} callers {callers} threads {threads_per_call} p50_ms {pick(0.5):.4f} p99_ms {pick(0.99):.4f} "
          f"rows_per_s {batch * len(all_) / seconds:.0f}", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--compile", action="store_true", help="also run each model under torch.compile")
    parser.add_argument("--serve", action="store_true", help="serving latency of E5 in eval mode instead")
    parser.add_argument("--calls", type=int, default=2000, help="--serve: calls per caller (a quarter at batch 256)")
    args = parser.parse_args()
    if args.serve:
        torch.set_num_threads(1)
        torch.manual_seed(0)
        model = E5().eval()
        for batch in (1, 16, 256):
            for callers in (1, 2):
                serve(model, batch, callers, args.calls // 4 if batch == 256 else args.calls, 200)
        serve(model, 256, 1, args.calls // 4, 200, threads_per_call=os.cpu_count())  # one caller on every core
        return
    torch.set_num_threads(args.threads)
    modes = ["eager", "compile"] if args.compile else ["eager"]
    for mode in modes:
        for name, cls in (("E1", E1), ("E5", E5)):
            torch.manual_seed(0)
            # Under torch.compile the warm-up steps include the compilation.
            rate = run(cls(), args.steps, warmup=5, compile_model=mode == "compile")
            print(f"pytorch_{mode} {name} samples_per_s {rate:.0f}", flush=True)


if __name__ == "__main__":
    main()
