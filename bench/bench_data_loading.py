"""How fast can training read SynthCaps? DataLoader throughput vs raw soundfile reads.

    python bench/bench_data_loading.py [--root data/synthcaps-bench] [--num-clips 96]

Writes a small SynthCaps folder if ``--root`` has none, then reports clips/s and
seconds of audio per second for: plain ``soundfile.read`` of every wav (the floor
cost of the I/O, measured in the same run), and ``SynthCapsDataset`` through a
``DataLoader`` with 0 and 2 worker processes. Each reader makes one untimed
warm-up pass (file cache, torch's first-call set-up), then the best of three
timed passes over every clip is reported. Worker start-up is part of every
DataLoader pass, as it is of every epoch without ``persistent_workers``.
"""

import argparse
from pathlib import Path

import soundfile as sf
from torch.utils.data import DataLoader

from mlm_lessons import datasets
from timing import best_time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", default="/tmp/synthcaps-bench", help="dataset folder (written if absent)")
    parser.add_argument("--num-clips", type=int, default=96)
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args()

    root = Path(args.root)
    if not (root / datasets.MANIFEST_NAME).exists():
        print(f"writing {args.num_clips} clips to {root} ...")
        datasets.write_synthcaps(root, preset="tiny", num_clips=args.num_clips, progress=False)
    dataset = datasets.SynthCapsDataset(root, split="all")
    clip_seconds = dataset[0]["audio"].shape[-1] / 16_000
    paths = [record.path for record in dataset.records]

    def raw_reads():
        for path in paths:
            sf.read(str(path), dtype="float32")

    def loader_pass(workers):
        loader = DataLoader(dataset, batch_size=args.batch_size, num_workers=workers,
                            collate_fn=datasets.collate_clips)
        return lambda: [batch["audio"].shape for batch in loader]

    print(f"{len(dataset)} clips x {clip_seconds:g} s at 16 kHz, batch size {args.batch_size}")
    print(f"{'reader':34s} {'clips/s':>9s} {'audio s/s':>10s} {'vs raw':>8s}")
    raw_seconds = best_time(raw_reads)
    rows = [("soundfile.read (baseline)", raw_seconds)]
    for workers in (0, 2):
        rows.append((f"SynthCapsDataset, num_workers={workers}", best_time(loader_pass(workers))))
    for name, seconds in rows:
        print(f"{name:34s} {len(dataset) / seconds:9.0f} {len(dataset) * clip_seconds / seconds:10.0f} "
              f"{raw_seconds / seconds:7.2f}x")


if __name__ == "__main__":
    main()
