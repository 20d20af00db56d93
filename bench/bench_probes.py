"""Lesson 06's probe table: what each representation of SynthCaps tiny knows about the melody and the lead.

    python bench/bench_probes.py [--tokenizer data/checkpoints/w2v-bert-tiny.pt]
        [--codec data/checkpoints/soundstream-tiny.pt] [--threads 1] [--no-untrained] [--untrained-seed 0]

Embeds, tokenises and labels every clip of SynthCaps tiny (:func:`mlm_lessons.probes.probe_frames`: one frame
per 40 ms, labelled with the melody's pitch class, ``-1`` in rests, and the clip's lead instrument), fits linear
probes (multinomial logistic regression) on the ``train`` split and scores them on the ``valid`` and ``test``
splits together. Three tables:

1. **Representations** (:func:`mlm_lessons.probes.probe_table`): raw log-mel, SoundStream's acoustic tokens
   (first RVQ level, all levels; one-hot), the semantic tokens (one-hot) and the w2v-BERT layer they were
   fitted on (continuous). For each label, the held-out accuracy beside chance, the baseline: the accuracy
   of always guessing the commonest train label (:attr:`~mlm_lessons.probes.ProbeResult.chance`), with the
   ratio accuracy / chance.
2. **Layers**: the continuous embeddings of every layer of the encoder (0: the feature encoder, then each
   Conformer block; :func:`mlm_lessons.probes.linear_probe`, standardised), the same labels.
3. **Trained against untrained** (skip with ``--no-untrained``): does training the encoder help? The same
   probes (semantic tokens, every layer) on a second baseline, an encoder of the same architecture left at
   its random initialisation, with its own k-means centroids fitted the same way on the train clips
   (:meth:`~mlm_lessons.tokenize.SemanticTokenizer.fit`, same number of clusters, same layer); the ratio is
   trained accuracy / untrained accuracy.

Needs the trained tokenizer (``--tokenizer``: a w2v-BERT with its k-means centroids, written by
``python -m mlm_lessons train --preset tiny --stage w2v_bert ... --export``) and the trained codec; when either
file is missing the bench says so and exits (status 0). Nothing is asserted.
"""

import os

# Pin the math libraries before numpy / torch / scikit-learn load them; --threads sets the same limit below.
for variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(variable, "1")

import argparse  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

from mlm_lessons import probes, runtime  # noqa: E402
from mlm_lessons.audio import load_audio  # noqa: E402
from mlm_lessons.config import get_preset  # noqa: E402
from mlm_lessons.datasets import ensure_synthcaps, read_synthcaps_manifest  # noqa: E402
from mlm_lessons.soundstream import SoundStream  # noqa: E402
from mlm_lessons.tokenize import SemanticTokenizer  # noqa: E402
from mlm_lessons.w2v_bert import W2VBert  # noqa: E402

try:
    from threadpoolctl import threadpool_limits
except ImportError:
    threadpool_limits = None

REPOSITORY = Path(__file__).resolve().parents[1]
DEFAULT_TOKENIZER = REPOSITORY / "data/checkpoints/w2v-bert-tiny.pt"
DEFAULT_CODEC = REPOSITORY / "data/checkpoints/soundstream-tiny.pt"
SHORT = {"pitch class": "pitch", "instrument": "instr."}  # column titles
MAKE = {
    "tokenizer": "python -m mlm_lessons train --preset tiny --stage w2v_bert --out runs/w2v-bert-tiny "
                 "--export data/checkpoints/w2v-bert-tiny.pt",
    "codec": "python -m mlm_lessons train --preset tiny --stage soundstream --steps 2500 --out runs/soundstream-tiny "
             "--export data/checkpoints/soundstream-tiny.pt",
}


def shown(path: Path) -> str:
    """``path`` relative to the current directory when it lies below it (shorter to read)."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def labels_of(table: dict, frames: probes.ProbeFrames) -> dict[str, str]:
    """The labels ``probe_table`` probed, those that ``ProbeFrames`` carries too: ``{label: field name}``."""
    probed = next(iter(table.values()))
    fields = {label: label.replace(" ", "_") for label in probed}
    return {label: field for label, field in fields.items() if hasattr(frames, field)}


def header(first: str, labels: dict, second: str = "chance") -> str:
    return f"{first:44s}" + "".join(f" | {SHORT.get(label, label):>8s} {second:>9s} {'ratio':>7s}" for label in labels)


def cells(results: dict, labels: dict, baselines: dict | None = None) -> str:
    """Accuracy, baseline (chance, or ``baselines[label].accuracy``) and their ratio, for each label."""
    text = ""
    for label in labels:
        accuracy = results[label].accuracy
        baseline = results[label].chance if baselines is None else baselines[label].accuracy
        text += f" | {accuracy:8.1%} {baseline:9.1%} {accuracy / baseline:6.2f}x"
    return text


def probe_layers(train: probes.ProbeFrames, test: probes.ProbeFrames, labels: dict) -> list[dict]:
    """``[{label: ProbeResult}]``, one per layer of the continuous embeddings (standardised), layer 0 first."""
    return [{label: probes.linear_probe(train.layers[layer], getattr(train, field), test.layers[layer],
                                        getattr(test, field))
             for label, field in labels.items()}
            for layer in range(len(train.layers))]


def probe_tokens(train: probes.ProbeFrames, test: probes.ProbeFrames, labels: dict, num_clusters: int) -> dict:
    """``{label: ProbeResult}`` of the one-hot semantic tokens, as ``probe_table`` probes them."""
    train_x, test_x = (probes.one_hot_tokens(frames.semantic_tokens, num_clusters) for frames in (train, test))
    return {label: probes.linear_probe(train_x, getattr(train, field), test_x, getattr(test, field),
                                       standardize=False)
            for label, field in labels.items()}


def layer_name(encoder: W2VBert, layer: int, token_layer: int) -> str:
    name = "layer 0 (feature encoder)" if layer == 0 else f"layer {layer}" + (
        " (contrastive)" if layer <= len(encoder.contrastive_blocks) else " (masked prediction)")
    return name + (", tokens' layer" if layer == token_layer else "")


def print_table(title: str, first: str, rows: dict, labels: dict, second: str = "chance",
                baselines: dict | None = None) -> None:
    print(f"\n{title}")
    line = header(first, labels, second)
    print(line)
    print("-" * len(line))
    for name, results in rows.items():
        print(f"{name:44s}" + cells(results, labels, None if baselines is None else baselines[name]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokenizer", type=Path, default=DEFAULT_TOKENIZER,
                        help="a semantic tokenizer file (SemanticTokenizer.save)")
    parser.add_argument("--codec", type=Path, default=DEFAULT_CODEC, help="an exported SoundStream")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--no-untrained", action="store_true",
                        help="skip table 3 (the same probes on an untrained encoder; about 40 s)")
    parser.add_argument("--untrained-seed", type=int, default=0, help="torch seed of the untrained encoder")
    args = parser.parse_args()
    for what, path in (("tokenizer", args.tokenizer), ("codec", args.codec)):
        if not path.is_file():
            print(f"no {what} at {shown(path)}: nothing to probe. Make one with\n    {MAKE[what]}\n"
                  f"or pass --{what} PATH. Skipping the probe bench.")
            sys.exit(0)
    runtime.seed_and_threads(0, args.threads)
    if threadpool_limits is not None:
        threadpool_limits(args.threads)
    started = time.perf_counter()

    tokenizer = SemanticTokenizer.load(args.tokenizer)
    codec = SoundStream.load(args.codec).eval()
    clip_seconds = get_preset("tiny").data.clip_seconds
    records = read_synthcaps_manifest(ensure_synthcaps("tiny", progress=False))
    train_records = [record for record in records if record.split == "train"]
    test_records = [record for record in records if record.split in ("valid", "test")]
    encoder = tokenizer.encoder
    print(f"machine: {os.cpu_count()} core(s), {platform.machine()}; torch {torch.__version__}, "
          f"{torch.get_num_threads()} thread(s); probes: scikit-learn LogisticRegression(max_iter=300)")
    print(f"tokenizer: {shown(args.tokenizer)} (w2v-BERT {encoder.num_layers} Conformer blocks x d_model "
          f"{encoder.config.d_model}, {encoder.num_parameters() / 1e6:.2f}M parameters; {tokenizer.num_clusters} "
          f"clusters of layer {tokenizer.layer})")
    print(f"codec: {shown(args.codec)} ({codec.num_levels} levels x {codec.codebook_size} codes at "
          f"{codec.frame_rate} frames/s)")

    began = time.perf_counter()
    with torch.no_grad():
        train = probes.probe_frames(train_records, tokenizer, codec, clip_seconds)
        test = probes.probe_frames(test_records, tokenizer, codec, clip_seconds)
    print(f"frames: train {len(train.clip)} ({len(train_records)} clips), held out {len(test.clip)} "
          f"({len(test_records)} valid + test clips); melody labelled in {(train.pitch_class >= 0).mean():.0%} of "
          f"train frames; {time.perf_counter() - began:.1f} s to embed, tokenise and label them")
    print(f"semantic tokens used on the train frames: {len(set(train.semantic_tokens.tolist()))} of "
          f"{tokenizer.num_clusters}")

    began = time.perf_counter()
    table = probes.probe_table(train, test, codec.codebook_size, tokenizer.num_clusters,
                               embedding_layer=tokenizer.layer)
    labels = labels_of(table, train)
    print_table(f"1. Linear probes of each representation, held-out accuracy ({time.perf_counter() - began:.0f} s "
                "to fit)", "representation", table, labels)

    began = time.perf_counter()
    trained_layers = probe_layers(train, test, labels)
    layer_rows = {layer_name(encoder, layer, tokenizer.layer): results for layer, results in enumerate(trained_layers)}
    print_table(f"2. Linear probes of every w2v-BERT layer's embeddings (continuous, standardised; "
                f"{time.perf_counter() - began:.0f} s to fit)", "w2v-BERT embeddings", layer_rows, labels)

    if not args.no_untrained:
        began = time.perf_counter()
        torch.manual_seed(args.untrained_seed)
        untrained = W2VBert(encoder.sample_rate, encoder.frame_rate, encoder.config, causal=encoder.causal).eval()
        clips = [load_audio(record.path, sample_rate=encoder.sample_rate)[0] for record in train_records]
        baseline = SemanticTokenizer.fit(untrained, clips, tokenizer.num_clusters, layer=tokenizer.layer, seed=0)
        with torch.no_grad():
            base_train = probes.probe_frames(train_records, baseline, codec, clip_seconds)
            base_test = probes.probe_frames(test_records, baseline, codec, clip_seconds)
        rows = {"semantic tokens": table["semantic tokens"], **layer_rows}
        baselines = {"semantic tokens": probe_tokens(base_train, base_test, labels, baseline.num_clusters),
                     **dict(zip(layer_rows, probe_layers(base_train, base_test, labels)))}
        print_table(f"3. Trained against untrained: the same probes on an encoder of the same architecture with "
                    f"random weights (seed {args.untrained_seed}), its own {baseline.num_clusters} k-means clusters "
                    f"of layer {baseline.layer} fitted the same way on the train clips "
                    f"({time.perf_counter() - began:.0f} s)", "representation", rows, labels, "untrained", baselines)
        print("ratio = trained accuracy / untrained accuracy (> 1: training made the property easier to read; "
              "about 1: training added nothing a random encoder of this shape does not already give).")

    print("\npitch: the melody's pitch class (12 classes; frames in rests left out); "
          "instr.: the clip's lead instrument (every frame). chance: accuracy of always guessing the "
          "commonest train label (the baseline); ratio = accuracy / chance. Tokens are one-hot, so their probe is a "
          "lookup table token -> label.")
    print(f"\nbench wall time: {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
