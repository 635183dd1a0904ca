#!/usr/bin/env python3
"""Where a CPU training step's time goes, by kind of work, from `perf`.

    cargo bench --no-run --bench train_step
    perf record -F 499 --call-graph dwarf,16384 -o /tmp/step.data \\
        target/release/deps/train_step-<hash> 64 wgan
    perf script -i /tmp/step.data | scripts/profile-step.py

Reads `perf script` output (samples with their call stacks, inlined frames included) and
prints the share of each kind of work: the tile kernel, the layout changes around it, packing,
the optimiser, elementwise ops, rayon's waiting... A sample counts for the first kind, in the
order below, that any frame of its stack names, so the specific kinds (the write-back, the
packing) win over the broad ones (rayon's worker loop, which is on every worker's stack).

Left out of the shares, and counted apart: the bench's FMA-peak measurement (`fma_peak`, whose
`Chains` kernel is made of the same FMA intrinsics as the tile kernel: counted with it, it
read as 17% more tile kernel) and the loading of the MNIST files. Needs only Python 3.
"""
import collections
import re
import sys

# (kind, pattern over one frame). Order matters: the first kind any frame matches wins.
KINDS = [
    ("tile kernel", r"f32_kernels::accumulate|tile::f32_kernels|accumulate_two_tiles|accumulate_rows_unchecked"
                    r"|accumulate_two_blocks|tile_pairs|tile_amx|accumulate_pairs"),
    ("write back (tiles -> NCHW)", r"tiles_back|from_tile_layout|write_back"),
    ("lay out (NCHW -> tiles)", r"to_tile_layout|into_tiles|ToTileLayout"),
    ("weight gradient: channel blocks", r"ChannelBlock|to_channel_blocks"),
    ("pack weights", r"pack_weights|bf16_pack"),
    ("start sums", r"start_sums|start_tiles"),
    ("single-channel kernels", r"single_channel"),
    ("rectangles (GEMM convolutions)", r"conv::rectangles"),
    ("matmul", r"cpu::matmul|gemm_"),
    ("optimiser and clipping", r"cpu::optim"),
    ("reductions", r"cpu::reduce"),
    ("elementwise", r"cpu::elementwise"),
    ("other layout changes", r"cpu::layout|strided_copy|strided_write"),
    ("random numbers", r"cpu::random|rand_distr|rand::"),
    ("allocation and page faults", r"memset|malloc|_int_free|cfree|page_fault|clear_page"),
    ("rayon: waiting and waking", r"rayon_core::sleep|futex|sched_yield|finish_task_switch|try_to_wake"),
]
LEFT_OUT = r"fma_peak|Chains|miniz_oxide|flate2|data::Mnist|parse_idx"


def frames_of(block):
    """The function names of one sample's stack, innermost first."""
    frames = []
    for line in block[1:]:
        parts = line.strip().split(None, 1)
        if len(parts) == 2:
            frames.append(re.sub(r"\+0x[0-9a-f]+.*", "", parts[1]))
    return frames


def main():
    counts = collections.Counter()
    kept = left_out = 0
    block = []
    lines = list(sys.stdin) + ["\n"]
    for line in lines:
        if line.strip():
            block.append(line.rstrip("\n"))
            continue
        if len(block) > 1:
            frames = frames_of(block)
            if any(re.search(LEFT_OUT, f) for f in frames):
                left_out += 1
            else:
                kept += 1
                for kind, pattern in KINDS:
                    if any(re.search(pattern, f) for f in frames):
                        counts[kind] += 1
                        break
                else:
                    counts["other: " + (frames[0][:80] if frames else "?")] += 1
        block = []
    if kept == 0:
        sys.exit("profile-step: no samples with call stacks on stdin (perf script output expected)")
    print(f"{kept} samples ({left_out} more left out: the FMA-peak measurement and data loading)")
    for kind, n in counts.most_common(30):
        print(f"{100 * n / kept:6.2f}%  {kind}")


if __name__ == "__main__":
    main()
