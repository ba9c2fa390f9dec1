"""scripts/gpu_summary.py and the work count of scripts/pytorch_reference.py: the FLOPs
against a count by hand from the architecture, and the summary of the H200 results kept
in benchmarks/gpu/h200_2026-12-04 (tables and target verdicts)."""
import os
import subprocess
import sys

import pytest

# The work count runs the network on torch's meta device. `make setup` installs torch into
# the venv unless LIBTORCH names the user's own libtorch (a Jetson's, say): then there is
# no torch to count with, and these tests say so.
torch = pytest.importorskip("torch", reason="no torch in this Python (LIBTORCH set: make setup installed none)")

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "scripts"))
import pytorch_reference as reference  # noqa: E402


def gflop_by_hand(first, k, down, bottleneck, up, height, width, classes=11):
    """2 x multiply-adds of every convolution (3x3 in dense layers, 1x1 transitions down
    and heads, 3x3 stride-2 transposed convolutions counted at their input size)."""
    conv = lambda cin, cout, kk, h, w: 2 * cin * cout * kk * kk * h * w  # noqa: E731
    h, w, c = height, width, first
    flops = conv(3, first, 3, h, w)
    skips = []
    for n in down:
        flops += sum(conv(c + i * k, k, 3, h, w) for i in range(n))
        c += n * k
        skips.append((c, h, w))
        flops += conv(c, c, 1, h, w)
        h, w = h // 2, w // 2
    flops += sum(conv(c + i * k, k, 3, h, w) for i in range(bottleneck))
    up_c = bottleneck * k
    for n, (skip, sh, sw) in zip(up, reversed(skips)):
        flops += conv(up_c, up_c, 3, h, w)
        h, w = sh, sw
        cin = up_c + skip
        flops += sum(conv(cin + i * k, k, 3, h, w) for i in range(n))
        c, up_c = cin + n * k, n * k
    flops += conv(c, 2 * classes + 2, 1, h, w)
    return flops / 1e9


@pytest.mark.parametrize("arch", ["fcdensenet56", "fcdensenet103"])
def test_the_flop_count_is_the_convolutions_counted_by_hand(arch):
    preset = reference.PRESETS[arch]
    net = reference.FcDenseNet(**preset).eval()
    one, _ = reference.count_work(net, (1, 3, 64, 96), "aleatoric", 1, 1, torch.float32,
                                  torch.contiguous_format)
    assert one == pytest.approx(gflop_by_hand(**preset, height=64, width=96), rel=1e-9)
    # MC: T passes in chunks, the same FLOPs per pass; half precision moves half the bytes.
    mc, mc_bytes = reference.count_work(net, (1, 3, 64, 96), "mc", 5, 2, torch.float32,
                                        torch.contiguous_format)
    assert mc == pytest.approx(5 * one, rel=1e-9)
    half = net.to(torch.float16)
    _, half_bytes = reference.count_work(half, (1, 3, 64, 96), "mc", 5, 2, torch.float16,
                                         torch.contiguous_format)
    assert half_bytes == pytest.approx(mc_bytes / 2, rel=0.02)


def test_the_summary_of_the_h200_results_has_every_row_and_the_verdicts():
    out = subprocess.run(
        [sys.executable, os.path.join(ROOT, "scripts", "gpu_summary.py"),
         os.path.join(ROOT, "benchmarks", "gpu", "h200_2026-12-04")],
        capture_output=True, text=True, check=True).stdout
    rows = [line for line in out.splitlines() if line.startswith("| 103_") or line.startswith("| 360x480")]
    assert len(rows) == 8 + 4, out
    # FC-DenseNet103 at 360x480 (padded to 384x480): 149 GFLOP a pass, MC-50 7 435 GFLOP.
    assert "| 360x480_mc50_b25_fp16_cl | 222.35 ms | 7435 | 392.8 | 33.4 |" in out, out
    assert ("aleatoric whole frame at 360x480 <= 5 ms: **missed**, best 30.79 ms "
            "(32 frames/s, 103_360x480_aleatoric_bf16), 6.2x the target") in out, out
    assert "MC-50 >= 1.5x faster than the best PyTorch forward: **missed**, 0.54x" in out, out
    # The card from doctor.txt, the forward-to-forward ratio and what was not measured.
    assert "Device: NVIDIA H200, 143771 MiB, 580.159.04" in out, out
    assert "forward against forward: 0.63x (our fastest forward stage 354.36 ms)" in out, out
    assert "PyTorch set-ups missing from this comparison: fp16_cl_graph, fp16_cl_compiled" in out, out


def test_bag_process_summaries_get_their_own_table(tmp_path):
    """A `bag process --json` summary (here a real one, kept from the CPU overlap
    measurement) is a row of the bag table: frames/s and time per frame over the whole
    run, and the share of it outside the forward passes."""
    import shutil
    kept = os.path.join(ROOT, "benchmarks", "cpu", "bag_overlap", "overlapped_2.json")
    shutil.copy(kept, tmp_path / "bag_process_demo_960x720.json")
    out = subprocess.run(
        [sys.executable, os.path.join(ROOT, "scripts", "gpu_summary.py"), str(tmp_path)],
        capture_output=True, text=True, check=True)
    assert "skipping" not in out.stderr, out.stderr
    # 40 frames in 17.74 s: 2.25 frames/s, 443.5 ms a frame, 380.6 of it in the network.
    assert ("| demo_960x720 | ok | 40 | 2.3 | 443.5 ms | 380.6 ms | 14 % | 462 MiB |"
            in out.stdout), out.stdout
    assert "aleatoric at 360x480: no result of ours" in out.stdout, out.stdout
