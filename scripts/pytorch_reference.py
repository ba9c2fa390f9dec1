#!/usr/bin/env python3
"""The same Bayesian FC-DenseNet in plain PyTorch, timed the way `bayes_perception bench`
times the engine, so the two can be compared on one machine (see BENCHMARKS.md).

Only the network's forward passes are timed, on the input padded to multiples of 32 as
the engine pads it (random weights, BatchNorm in eval mode,
dropout active only for MC samples), with the same heads as the engine's models.

    python3 scripts/pytorch_reference.py --arch fcdensenet56 --height 360 --width 480
    python3 scripts/pytorch_reference.py --arch fcdensenet56 --height 180 --width 240 \
        --mode mc --samples 10 --batch-size 10
    python3 scripts/pytorch_reference.py --device cuda --arch fcdensenet103 --dtype fp16 \
        --channels-last --compile --json out.json   # the fastest PyTorch set-up we know

--dtype converts weights and input (fp16/bf16), --channels-last uses NHWC memory format,
--compile wraps the network in torch.compile (--compile-mode picks its mode, e.g.
reduce-overhead, which replays CUDA graphs; its compile time is not timed: the warm-up
frames pay it), --cuda-graph captures one frame's forward passes as a CUDA graph and
replays it (dropout masks drawn afresh on each replay). --json FILE writes the result as
JSON; --profile prints the 25 costliest CUDA kernels of one frame by their own time
(torch.profiler). The work of a frame is counted on the meta device (GFLOP, and GB read
and written by the eager ops; --no-count skips it) and reported with the TFLOP/s and GB/s
the median reaches.
"""
import argparse
import copy
import json
import statistics
import time
import warnings

warnings.filterwarnings("ignore", message="Failed to initialize NumPy")
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

PRESETS = {
    "fcdensenet56": dict(first=48, k=12, down=[4] * 5, bottleneck=4, up=[4] * 5),
    "fcdensenet67": dict(first=48, k=16, down=[5] * 5, bottleneck=5, up=[5] * 5),
    "fcdensenet103": dict(first=48, k=16, down=[4, 5, 7, 10, 12], bottleneck=15, up=[12, 10, 7, 5, 4]),
}


class DenseBlock(nn.Module):
    def __init__(self, cin, layers, k, p):
        super().__init__()
        self.layers = nn.ModuleList(
            nn.Sequential(nn.BatchNorm2d(cin + i * k), nn.ReLU(), nn.Conv2d(cin + i * k, k, 3, padding=1))
            for i in range(layers)
        )
        self.p = p

    def forward(self, x, mc):
        new = []
        for layer in self.layers:
            out = F.dropout(layer(x), self.p, training=mc)
            x = torch.cat([x, out], 1)
            new.append(out)
        return x, torch.cat(new, 1)


class FcDenseNet(nn.Module):
    def __init__(self, first, k, down, bottleneck, up, classes=11, p=0.2):
        super().__init__()
        self.p = p
        self.first = nn.Conv2d(3, first, 3, padding=1)
        c, skips = first, []
        self.down, self.td = nn.ModuleList(), nn.ModuleList()
        for n in down:
            self.down.append(DenseBlock(c, n, k, p))
            c += n * k
            skips.append(c)
            self.td.append(nn.Sequential(nn.BatchNorm2d(c), nn.ReLU(), nn.Conv2d(c, c, 1)))
        self.bottleneck = DenseBlock(c, bottleneck, k, p)
        up_c = bottleneck * k
        self.tu, self.up = nn.ModuleList(), nn.ModuleList()
        for n, skip in zip(up, reversed(skips)):
            self.tu.append(nn.ConvTranspose2d(up_c, up_c, 3, stride=2, padding=1, output_padding=1))
            self.up.append(DenseBlock(up_c + skip, n, k, p))
            c = up_c + skip + n * k
            up_c = n * k
        self.heads = nn.ModuleList(nn.Conv2d(c, out, 1) for out in (classes, classes, 1, 1))
        self.fp32_heads = False

    def forward(self, x, mc):
        x = self.first(x)
        skips = []
        for block, td in zip(self.down, self.td):
            out, _ = block(x, mc)
            skips.append(out)
            x = F.max_pool2d(F.dropout(td(out), self.p, training=mc), 2)
        _, x = self.bottleneck(x, mc)
        for tu, block, skip in zip(self.tu, self.up, reversed(skips)):
            stack, x = block(torch.cat([tu(x), skip], 1), mc)
        if not self.fp32_heads:
            # As before 2026-12-06 (the heads in the network's precision, one convolution
            # each): what summaries of runs of then count.
            return [head(stack) for head in self.heads]
        # As the engine runs them: fp32, the decoder output cast once and read once by
        # one convolution of every head's weights.
        stack = stack.float()
        weight = torch.cat([head.weight for head in self.heads])
        bias = torch.cat([head.bias for head in self.heads])
        return list(torch.split(F.conv2d(stack, weight, bias), [h.out_channels for h in self.heads], 1))


def network(arch, dtype=torch.float32, memory_format=torch.contiguous_format, device="cpu", fp32_heads=True):
    """The reference network, random weights, in eval mode: `dtype` throughout but for the
    heads, which run in fp32 as one convolution, as the engine runs them (`fp32_heads`
    False: in `dtype`, one convolution each, as before 2026-12-06)."""
    net = FcDenseNet(**PRESETS[arch]).to(device=device, dtype=dtype, memory_format=memory_format).eval()
    if fp32_heads:
        net.heads.float()
        net.fp32_heads = True
    return net


def count_work(net, shape, mode, samples, batch_size, dtype, memory_format):
    """FLOPs and bytes of one frame's forward passes, counted on the meta device (nothing
    runs, so it is free at any size): FLOPs by torch's FlopCounterMode (a multiply-add is
    2), bytes as every aten op reading its tensor inputs and writing its outputs once
    (eager PyTorch, unfused: what the memory moves when nothing is fused). Either in
    units of 1e9 (GFLOP, GB)."""
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils.flop_counter import FlopCounterMode

    class ByteCounter(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.bytes = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            tensors = [t for t in torch.utils._pytree.tree_leaves((args, kwargs, out)) if isinstance(t, torch.Tensor)]
            self.bytes += sum(t.numel() * t.element_size() for t in tensors)
            return out

    meta = copy.deepcopy(net).to("meta")
    batches = [1] if mode == "aleatoric" else [min(batch_size, samples - done) for done in range(0, samples, batch_size)]
    flops, counter = FlopCounterMode(display=False), ByteCounter()
    with torch.inference_mode(), flops, counter:
        for b in batches:
            x = torch.empty(b, *shape[1:], device="meta", dtype=dtype).contiguous(memory_format=memory_format)
            meta(x, mc=mode == "mc")
    return flops.get_total_flops() / 1e9, counter.bytes / 1e9


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", default="fcdensenet56", choices=PRESETS)
    ap.add_argument("--height", type=int, default=360)
    ap.add_argument("--width", type=int, default=480)
    ap.add_argument("--mode", default="aleatoric", choices=["aleatoric", "mc"])
    ap.add_argument("--samples", type=int, default=10)
    ap.add_argument("--batch-size", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--frames", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--dtype", default="fp32", choices=["fp32", "fp16", "bf16"])
    ap.add_argument("--channels-last", action="store_true")
    ap.add_argument("--no-cudnn-benchmark", action="store_true",
                    help="leave cuDNN's algorithm search off (on by default, as in bayes_perception)")
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--compile-mode", default=None, help="torch.compile mode (default: its default)")
    ap.add_argument("--cuda-graph", action="store_true", help="replay one frame as a CUDA graph")
    ap.add_argument("--no-count", action="store_true", help="skip counting the work of a frame")
    ap.add_argument("--json", help="write the result to this file")
    ap.add_argument("--profile", action="store_true")
    args = ap.parse_args()

    device = torch.device(args.device)
    dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[args.dtype]
    memory_format = torch.channels_last if args.channels_last else torch.contiguous_format
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = not args.no_cudnn_benchmark
    net = network(args.arch, dtype, memory_format, device)
    if args.cuda_graph and device.type != "cuda":
        ap.error("--cuda-graph needs --device cuda")
    forward = torch.compile(net, mode=args.compile_mode) if args.compile else net
    # Padded to multiples of 32 (five poolings), as the engine pads.
    pad = lambda n: -(-n // 32) * 32  # noqa: E731
    x = torch.rand(1, 3, pad(args.height), pad(args.width), device=device, dtype=dtype)
    x = x.contiguous(memory_format=memory_format)

    def passes():
        if args.mode == "aleatoric":
            forward(x, mc=False)
        else:
            done = 0
            while done < args.samples:
                b = min(args.batch_size, args.samples - done)
                forward(x.expand(b, -1, -1, -1).contiguous(memory_format=memory_format), mc=True)
                done += b

    run = passes
    if args.cuda_graph:
        # Warmed up on a side stream (cuDNN picks its algorithms there), then captured once.
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.inference_mode(), torch.cuda.stream(side):
            for _ in range(3):
                passes()
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.inference_mode(), torch.cuda.graph(graph):
            passes()
        run = graph.replay

    def frame():
        run()
        if device.type == "cuda":
            torch.cuda.synchronize()

    times = []
    with torch.inference_mode():
        for _ in range(args.warmup):
            frame()
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        for _ in range(args.frames):
            t = time.perf_counter()
            frame()
            times.append((time.perf_counter() - t) * 1e3)
        if args.profile:
            from torch.profiler import ProfilerActivity, profile

            with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
                frame()
            # By their own time: inclusive times repeat each kernel under every aten wrapper.
            print(prof.key_averages().table(sort_by="self_device_time_total", row_limit=25))
    params = sum(p.numel() for p in net.parameters())
    if args.no_count:
        gflop = gbyte = float("nan")
    else:
        gflop, gbyte = count_work(net, x.shape, args.mode, args.samples, args.batch_size, dtype, memory_format)
    median_s = statistics.median(times) / 1e3
    mc = f" T={args.samples} batch {args.batch_size}" if args.mode == "mc" else ""
    compiled = f" compiled ({args.compile_mode or 'default'})" if args.compile else ""
    setup = (args.dtype + (" channels-last" if args.channels_last else "") + compiled
             + (" CUDA graph" if args.cuda_graph else "")
             + (" no cuDNN benchmark" if args.no_cudnn_benchmark else ""))
    print(f"pytorch {torch.__version__} {args.arch} ({params / 1e6:.2f} M), {args.height}x{args.width}, {setup}, "
          f"mode {args.mode}{mc}, {args.device} ({torch.get_num_threads()} threads), {args.frames} frames")
    print(f"  network forward per frame: median {statistics.median(times):.1f} ms, "
          f"min {min(times):.1f} ms, max {max(times):.1f} ms")
    if not args.no_count:
        print(f"  work per frame: {gflop:.1f} GFLOP, {gbyte:.1f} GB moved by eager ops; at the median "
              f"{gflop / median_s / 1e3:.2f} TFLOP/s, {gbyte / median_s:.0f} GB/s")
    if args.json:
        counted = {} if args.no_count else dict(
            gflop_per_frame=gflop, gbyte_per_frame=gbyte, tflop_per_s=gflop / median_s / 1e3,
            gbyte_per_s=gbyte / median_s)
        result = dict(vars(args), torch=torch.__version__, parameters=params, heads="fp32 fused",
                      median_ms=statistics.median(times), min_ms=min(times), max_ms=max(times),
                      **counted,
                      peak_allocated_mib=(torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else None))
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
