#!/usr/bin/env python3
"""The device script's results as BENCHMARKS.md tables, with the real-time targets.

    python3 scripts/gpu_summary.py .gpu_results            # after `bash .gpu/run.sh`
    python3 scripts/gpu_summary.py benchmarks/gpu/<dir>    # results kept in the repository

Reads every `bayes_perception bench --json` result (`<name>.json`), every PyTorch
reference result (`pytorch_<name>.json`, scripts/pytorch_reference.py) and every
`bag process --json` summary (`bag_process_<name>.json`) in the directory and prints, as
Markdown: our set-ups (whole frame, its stages, the share outside the network, GPU
memory, and the forward's TFLOP/s and GB/s), the reference's set-ups, the bag runs
(frames/s over the whole run, reading and writing included), and
the targets of the real-time issue at 360x480 (aleatoric whole frame <= 5 ms, MC-50
<= 100 ms, <= 10 % outside the network, >= 1.5x faster than the best PyTorch forward of
the same mode), each met or missed by how much, with the reference set-ups that are
missing from the comparison. The whole frame is the one measured with the engine not
profiled (`unprofiled_median_ms`, as the node runs it) where bench has it; the share
outside the network is 1 - the forward stage (timed in the profiled frames) over that
frame; the stage columns are the profiled frames'. The card is
named from `doctor.txt` (nvidia-smi's line) when the directory has one.

The work of a frame is counted on the meta device with the reference's network
(pytorch_reference.count_work: FLOPs, and the bytes every eager op reads and writes), so
this needs torch but no GPU. Our forward moves less than that count (the dense blocks
are built in place, without concatenations), so our GB/s are of the reference's op
sequence, an upper bound on what we actually moved.
"""
import argparse
import glob
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import pytorch_reference as reference  # noqa: E402

TARGET_ALEATORIC_MS = 5.0
TARGET_MC50_MS = 100.0
TARGET_OUTSIDE_SHARE = 0.10
TARGET_SPEEDUP = 1.5
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}

_work_cache = {}


def work(arch, height, width, mode, samples, batch_size, precision, channels_last, heads):
    """(GFLOP, GB) of one frame's forward passes on the reference's network, or None for a
    mode the reference does not have (moments). `heads`: the result's `heads` (fp32 and
    fused since 2026-12-06; None for results of before, whose heads ran in the network's
    precision, one convolution each)."""
    if mode not in ("aleatoric", "mc"):
        return None
    key = (arch, height, width, mode, samples, batch_size, precision, channels_last, heads)
    if key not in _work_cache:
        dtype = DTYPES[precision]
        memory_format = torch.channels_last if channels_last else torch.contiguous_format
        net = reference.network(arch, dtype, memory_format, fp32_heads=bool(heads))
        pad = lambda n: -(-n // 32) * 32  # noqa: E731
        _work_cache[key] = reference.count_work(
            net, (1, 3, pad(height), pad(width)), mode, samples, batch_size or 1, dtype, memory_format)
    return _work_cache[key]


def load(directory):
    """(bench results, reference results, bag process summaries), each by name."""
    ours, theirs, bags = {}, {}, {}
    for path in sorted(glob.glob(os.path.join(directory, "*.json"))):
        name = os.path.basename(path)[:-5]
        with open(path) as f:
            try:
                result = json.load(f)
            except json.JSONDecodeError as e:
                print(f"skipping {path}: not JSON ({e})", file=sys.stderr)
                continue
        if name.startswith("pytorch_"):
            theirs[name[len("pytorch_"):]] = result
        elif name.startswith("bag_process_") and "processed" in result:
            bags[name[len("bag_process_"):]] = result
        elif "stages_median_ms" in result:
            ours[name] = result
        else:
            print(f"skipping {path}: neither a bench, a reference nor a bag result", file=sys.stderr)
    return ours, theirs, bags


def our_work(r):
    return work(r["arch"], r["height"], r["width"], r["mode"], r["samples"],
                r.get("batch_size"), r["precision"], r.get("channels_last", False), r.get("heads"))


def their_work(r):
    if "gflop_per_frame" in r:
        return r["gflop_per_frame"], r["gbyte_per_frame"]
    samples = r["samples"] if r["mode"] == "mc" else 1
    return work(r["arch"], r["height"], r["width"], r["mode"], samples, r["batch_size"], r["dtype"],
                r["channels_last"], r.get("heads"))


def fmt(value, digits=1, unit=""):
    return "n/a" if value is None else f"{value:.{digits}f}{unit}"


def rate(w, ms):
    """TFLOP/s and GB/s of work w = (GFLOP, GB) done in ms."""
    if w is None or not ms:
        return None, None
    return w[0] / ms, w[1] / ms * 1e3


def card(directory):
    """The GPU's nvidia-smi line (name, memory, driver) from doctor.txt, if there."""
    try:
        with open(os.path.join(directory, "doctor.txt")) as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    for header, values in zip(lines, lines[1:]):
        if header.startswith("name, memory.total"):
            return values.strip()
    return None


def frame_ms(r):
    """Our whole frame: not profiled (as the node runs it) where bench measured that."""
    return r.get("unprofiled_median_ms") or r["median_ms"]


def outside_share(r):
    """The share of the whole frame (not profiled, where measured) outside the network:
    1 - the forward stage (timed in the profiled frames, the device synchronised around
    it) over the frame; at least 0."""
    return max(0.0, 1 - r["stages_median_ms"]["forward"] / frame_ms(r))


def our_table(ours):
    lines = ["| set-up | batch | frame median (profiled) | not profiled | frames/s (profiled) "
             "| overlapped frames/s | forward | outside the network | upload | device post | download "
             "| host outputs | GPU peak allocated "
             "| forward TFLOP/s | forward GB/s |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, r in ours.items():
        s = r["stages_median_ms"]
        memory = (r.get("gpu_memory") or {}).get("peak_allocated_mib")
        tflops, gbs = rate(our_work(r), s["forward"])
        pinned = {True: " (pinned)", False: " (pageable)"}.get(r.get("pinned_download"), "")
        lines.append(
            f"| {name} | {r.get('batch_size') or '-'} | {r['median_ms']:.2f} ms "
            f"| {fmt(r.get('unprofiled_median_ms'), 2, ' ms')} | {r['frames_per_s']:.1f} "
            f"| {fmt(r.get('overlapped_frames_per_s'))} "
            f"| {s['forward']:.2f} ms | {100 * outside_share(r):.0f} % | {s['upload']:.2f} ms "
            f"| {s['device_post']:.2f} ms | {s['download']:.2f} ms{pinned} | {s['host_outputs']:.2f} ms "
            f"| {fmt(memory, 0, ' MiB')} | {fmt(tflops)} | {fmt(gbs, 0)} |")
    return lines


def their_table(theirs):
    lines = ["| set-up | forward median | GFLOP per frame | GB per frame (eager ops) | TFLOP/s | GB/s | GPU peak allocated |",
             "|---|---|---|---|---|---|---|"]
    for name, r in theirs.items():
        w = their_work(r)
        tflops, gbs = rate(w, r["median_ms"])
        lines.append(
            f"| {name} | {r['median_ms']:.2f} ms | {fmt(w and w[0], 0)} | {fmt(w and w[1], 1)} | {fmt(tflops)} "
            f"| {fmt(gbs, 0)} | {fmt(r.get('peak_allocated_mib'), 0, ' MiB')} |")
    return lines


def bag_table(bags):
    lines = ["| run | status | frames processed | frames/s | per frame | forward passes per frame "
             "| outside the network | output |",
             "|---|---|---|---|---|---|---|---|"]
    for name, r in bags.items():
        n, seconds = r["processed"], r["seconds"]
        per_frame = 1e3 * seconds / n if n else None
        forward = r.get("forward_ms_per_frame")
        outside = 1 - forward / per_frame if per_frame and forward is not None else None
        lines.append(
            f"| {name} | {r['status']} | {n} | {fmt(n / seconds if seconds else None)} "
            f"| {fmt(per_frame, 1, ' ms')} | {fmt(forward, 1, ' ms')} "
            f"| {fmt(None if outside is None else 100 * outside, 0, ' %')} | {r['output_bytes'] / 2**20:.0f} MiB |")
    return lines


# The PyTorch set-ups the device script runs for each mode at 360x480, by the suffix of
# their names: the comparison says which of them did not come back.
REFERENCE_SETUPS = {"aleatoric": ["fp32", "fp16_cl", "fp16_cl_graph", "fp16_cl_compiled"],
                    "mc": ["fp32", "fp16_cl", "fp16_cl_compiled"]}


def targets(ours, theirs, height=360, width=480):
    """The issue's targets at one size: met or missed, with the figures."""
    lines = []
    for mode, samples, target in (("aleatoric", 1, TARGET_ALEATORIC_MS), ("mc", 50, TARGET_MC50_MS)):
        label = "aleatoric" if mode == "aleatoric" else f"MC-{samples}"
        mine = {n: r for n, r in ours.items() if r["mode"] == mode and r["samples"] == samples
                and (r["height"], r["width"]) == (height, width)}
        refs = {n: r for n, r in theirs.items() if r["mode"] == mode
                and (r["samples"] if mode == "mc" else 1) == samples and (r["height"], r["width"]) == (height, width)}
        if not mine:
            lines.append(f"- {label} at {height}x{width}: no result of ours")
            continue
        name, best = min(mine.items(), key=lambda item: frame_ms(item[1]))
        ms, outside = frame_ms(best), outside_share(best)
        verdict = lambda ok: "**met**" if ok else "**missed**"  # noqa: E731
        lines.append(f"- {label} whole frame at {height}x{width} <= {target:g} ms: {verdict(ms <= target)}, "
                     f"best {ms:.2f} ms ({1e3 / ms:.0f} frames/s, {name})"
                     + ("" if ms <= target else f", {ms / target:.1f}x the target"))
        lines.append(f"- {label} outside the network <= {100 * TARGET_OUTSIDE_SHARE:.0f} %: "
                     f"{verdict(outside <= TARGET_OUTSIDE_SHARE)}, {100 * outside:.0f} % ({name})")
        if refs:
            ref_name, ref = min(refs.items(), key=lambda item: item[1]["median_ms"])
            speedup = ref["median_ms"] / ms
            lines.append(f"- {label} >= {TARGET_SPEEDUP:g}x faster than the best PyTorch forward: "
                         f"{verdict(speedup >= TARGET_SPEEDUP)}, {speedup:.2f}x (our whole frame {ms:.2f} ms "
                         f"against PyTorch {ref_name} {ref['median_ms']:.2f} ms, forward only)")
            fastest_forward = min(r["stages_median_ms"]["forward"] for r in mine.values())
            lines.append(f"  - forward against forward: {ref['median_ms'] / fastest_forward:.2f}x (our fastest "
                         f"forward stage {fastest_forward:.2f} ms)")
        else:
            lines.append(f"- {label}: no PyTorch reference at {height}x{width} to compare with")
        prefix = f"{height}x{width}_{'aleatoric' if mode == 'aleatoric' else f'mc{samples}_b25'}_"
        missing = [s for s in REFERENCE_SETUPS[mode] if prefix + s not in theirs]
        if missing:
            lines.append(f"  - PyTorch set-ups missing from this comparison: {', '.join(missing)}")
    return lines


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("directory")
    args = ap.parse_args()
    ours, theirs, bags = load(args.directory)
    if not ours and not theirs and not bags:
        sys.exit(f"no bench, reference or bag results in {args.directory}")
    out = []
    gpu = card(args.directory)
    if gpu:
        out += [f"Device: {gpu} (nvidia-smi, doctor.txt)", ""]
    if ours:
        out += ["Ours (`bayes_perception bench`, whole frame: image on the host in, every output message built):", ""]
        out += our_table(ours) + [""]
    if theirs:
        out += ["PyTorch reference (`scripts/pytorch_reference.py`, forward passes only):", ""]
        out += their_table(theirs) + [""]
    if bags:
        out += ["`bag process` (`--json` summaries; the whole run, reading and writing included):", ""]
        out += bag_table(bags) + [""]
    out += ["Targets:", ""] + targets(ours, theirs)
    print("\n".join(out))


if __name__ == "__main__":
    main()
