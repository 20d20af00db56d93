"""Command line: ``python -m mlm_lessons <command>``.

Commands:
    data       write the SynthCaps course data (wav clips + MusicCaps-style manifest)
    demo       render a few clips with captions, spectrograms and a page to play them
    train      train a model of the pipeline, resumable (--stage soundstream | w2v_bert | mulan |
               semantic | coarse | fine)
    tokens     turn a dataset into token files for the MusicLM stages (resumable)
    notebooks  execute lesson notebooks in place, storing their outputs
    assignments  student versions of the lessons, grading and validation (nbgrader)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mlm_lessons import assignments
from mlm_lessons.notebook_runner import LessonCellError


def _data(args: argparse.Namespace) -> None:
    from mlm_lessons import datasets

    out = args.out or datasets.default_synthcaps_folder(args.preset, args.num_clips)
    manifest = datasets.write_synthcaps(out, preset=args.preset, num_clips=args.num_clips,
                                        seed=args.seed, progress=not args.quiet)
    print(f"wrote {manifest}")


def _demo(args: argparse.Namespace) -> None:
    from mlm_lessons import demo

    page = demo.write_demo(args.out, num_clips=args.num_clips, seed=args.seed, seconds=args.seconds)
    print(f"wrote {page} -- open it in a browser to look and listen")


MUSICLM_STAGES = ("semantic", "coarse", "fine")
STAGES = ("soundstream", "w2v_bert", "mulan", *MUSICLM_STAGES)


def _train(args: argparse.Namespace) -> None:
    import dataclasses
    import resource
    import time

    import torch

    from mlm_lessons import config, datasets

    preset = config.get_preset(args.preset)
    if args.device:
        preset = dataclasses.replace(preset, train=dataclasses.replace(preset.train, device=args.device))
    if args.data and args.num_clips:
        raise ValueError("--num-clips renders SynthCaps clips and --data reads yours: pass one of them, not both")
    data = args.data or datasets.ensure_synthcaps(args.preset, num_clips=args.num_clips, progress=not args.quiet)
    if args.stage in MUSICLM_STAGES:
        _train_musiclm_stage(args, preset, data)
        return
    clips = [item["audio"] for item in datasets.SynthCapsDataset(data, "train",
                                                                  sample_rate=preset.data.sample_rate)]
    started = time.time()
    if args.stage == "soundstream":
        from mlm_lessons import soundstream

        training, history = soundstream.train_codec(preset, clips, args.out, steps=args.steps, resume=True,
                                                    progress=not args.quiet)
        export = training.codec.save
    elif args.stage == "mulan":
        from mlm_lessons import mulan

        records = [record for record in datasets.read_synthcaps_manifest(data) if record.split == "train"]
        captions = [mulan.training_texts(record, preset.mulan) for record in records]
        musiccaps = datasets.find_musiccaps_csv()   # its wording widens the tokenizer's vocabulary, if present
        extra = [record.caption for record in datasets.load_musiccaps(musiccaps)] if musiccaps else []
        model, history = mulan.train_mulan(preset, clips, captions, args.out, steps=args.steps, resume=True,
                                           progress=not args.quiet, extra_captions=extra)

        def export(path):  # the model with its MuLan-token quantiser, fitted on the training clips' audio
            model.fit_token_quantizer(torch.cat([model.embed_audio(torch.stack(clips[start:start + 100]))
                                                 for start in range(0, len(clips), 100)]))
            return model.save(path)
    else:
        from mlm_lessons import tokenize, w2v_bert

        model, history = w2v_bert.train_w2v_bert(preset, clips, args.out, steps=args.steps, resume=True,
                                                 progress=not args.quiet)

        def export(path):  # the encoder with its k-means centroids, fitted on the same clips
            tokenizer = tokenize.SemanticTokenizer.fit(model, clips, preset.tokens.semantic_clusters,
                                                       seed=preset.train.seed, progress=not args.quiet)
            return tokenizer.save(path)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    print(f"trained {history[-1]['step'] if history else 0} steps in {time.time() - started:.0f} s "
          f"({usage.ru_utime + usage.ru_stime:.0f} s of CPU time); checkpoint in {args.out}")
    if args.export:
        print(f"wrote {export(args.export)} ({Path(args.export).stat().st_size / 1e6:.1f} MB)")


def _train_musiclm_stage(args: argparse.Namespace, preset, data) -> None:
    """``train --stage semantic|coarse|fine``: a MusicLM stage on the token files of the training clips."""
    import resource
    import time

    from mlm_lessons import datasets, musiclm, token_files

    if not args.tokens:
        raise ValueError(f"--stage {args.stage} learns from token files: make them with `python -m mlm_lessons "
                         "tokens --out DIR`, then pass --tokens DIR")
    train_ids = [record.ytid for record in datasets.read_synthcaps_manifest(data) if record.split == "train"]
    spec, clips = token_files.read_token_files(args.tokens, train_ids)
    condition_on = args.condition_on.split(",") if args.condition_on else None
    started = time.time()
    model, history = musiclm.train_stage(preset, args.stage, clips, spec, out_dir=args.out, steps=args.steps,
                                         progress=not args.quiet, condition_on=condition_on)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    print(f"trained {history[-1]['step'] if history else 0} steps in {time.time() - started:.0f} s "
          f"({usage.ru_utime + usage.ru_stime:.0f} s of CPU time); checkpoint in {args.out}")
    if args.export:
        print(f"wrote {model.save(args.export)} ({Path(args.export).stat().st_size / 1e6:.1f} MB)")


def _tokens(args: argparse.Namespace) -> None:
    from mlm_lessons import datasets, mulan, soundstream, token_files, tokenize

    checkpoints = datasets.default_data_root() / "checkpoints"
    sources = {"codec": Path(args.codec or checkpoints / f"soundstream-{args.preset}.pt"),
               "semantic": Path(args.semantic or checkpoints / f"w2v-bert-{args.preset}.pt"),
               "mulan": Path(args.mulan or checkpoints / f"mulan-{args.preset}.pt")}
    for name, path in sources.items():
        if not path.is_file():
            raise FileNotFoundError(f"no {name} model at {path}; train it (python -m mlm_lessons train --stage "
                                    f"{ {'codec': 'soundstream', 'semantic': 'w2v_bert', 'mulan': 'mulan'}[name]} "
                                    f"--export {path}) or pass --{name} FILE")
    data = args.data or datasets.ensure_synthcaps(args.preset, progress=not args.quiet)
    records = datasets.read_synthcaps_manifest(data)
    spec = token_files.extract_tokens(
        records, args.out, soundstream.SoundStream.load(sources["codec"]),
        tokenize.SemanticTokenizer.load(sources["semantic"]), mulan.MuLan.load(sources["mulan"]), sources,
        progress=not args.quiet)
    print(f"token files of {len(records)} clips in {args.out} ({spec.name} records what made them)")


def _notebooks(args: argparse.Namespace) -> None:
    from mlm_lessons.notebook_runner import execute_notebook

    for path in args.paths:
        seconds = execute_notebook(path, timeout_per_cell=args.timeout)
        print(f"{path}: executed in {seconds:.1f} s")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m mlm_lessons", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    assignments.add_commands(commands)

    data = commands.add_parser("data", help="write the SynthCaps course data")
    data.add_argument("--preset", default="tiny", help="tiny | small | paper (default: tiny)")
    data.add_argument("--out", default=None,
                      help="output folder (default: data/synthcaps-<preset>, or data/synthcaps-<preset>-<N> with "
                           "--num-clips N)")
    data.add_argument("--num-clips", type=int, default=None, help="override the preset's clip count")
    data.add_argument("--seed", type=int, default=None, help="override the preset's seed")
    data.add_argument("--quiet", action="store_true", help="no progress bar")
    data.set_defaults(run=_data)

    demo = commands.add_parser("demo", help="render captioned clips you can look at and listen to")
    demo.add_argument("--out", default="data/demo", help="output folder")
    demo.add_argument("--num-clips", type=int, default=6)
    demo.add_argument("--seconds", type=float, default=6.0)
    demo.add_argument("--seed", type=int, default=0)
    demo.set_defaults(run=_demo)

    train = commands.add_parser("train", help="train a model of the pipeline (resumes from --out)")
    train.add_argument("--preset", default="tiny", help="tiny | small | paper (default: tiny)")
    train.add_argument("--stage", required=True, choices=STAGES, help="which model to train")
    train.add_argument("--data", default=None,
                       help="a SynthCaps folder (default: data/synthcaps-<preset>, rendered if missing)")
    train.add_argument("--num-clips", type=int, default=None,
                       help="without --data: train on this many SynthCaps clips (rendered once into "
                            "data/synthcaps-<preset>-<N>) instead of the preset's")
    train.add_argument("--tokens", default=None,
                       help="semantic | coarse | fine: the folder of token files (python -m mlm_lessons tokens)")
    train.add_argument("--condition-on", default=None,
                       help="semantic | coarse | fine, for ablations: a comma-separated subset of the stage's usual "
                            "conditioning (e.g. --stage coarse --condition-on mulan: no semantic tokens)")
    train.add_argument("--out", required=True, help="run folder: last.pt is written and resumed here")
    train.add_argument("--steps", type=int, default=None, help="optimiser steps (default: the preset's)")
    train.add_argument("--device", default=None, help="cpu | cuda | auto (default: the preset's)")
    train.add_argument("--export", default=None,
                       help="also write the trained model alone to this file (w2v_bert: with its k-means "
                            "centroids; mulan: with its tokenizer and token quantiser; a MusicLM stage: with the "
                            "configuration it was built from)")
    train.add_argument("--quiet", action="store_true", help="no progress bar")
    train.set_defaults(run=_train)

    tokens = commands.add_parser("tokens", help="turn a dataset into the token files the MusicLM stages learn from")
    tokens.add_argument("--preset", default="tiny", help="tiny | small | paper (default: tiny): which shipped models")
    tokens.add_argument("--data", default=None, help="a SynthCaps folder (default: data/synthcaps-<preset>)")
    tokens.add_argument("--out", required=True, help="folder for one token file per clip (resumed if present)")
    tokens.add_argument("--codec", default=None,
                        help="SoundStream file (default: data/checkpoints/soundstream-<preset>.pt)")
    tokens.add_argument("--semantic", default=None,
                        help="semantic tokenizer file (default: data/checkpoints/w2v-bert-<preset>.pt)")
    tokens.add_argument("--mulan", default=None, help="MuLan file (default: data/checkpoints/mulan-<preset>.pt)")
    tokens.add_argument("--quiet", action="store_true", help="no progress bar")
    tokens.set_defaults(run=_tokens)

    notebooks = commands.add_parser("notebooks", help="execute notebooks in place, storing outputs")
    notebooks.add_argument("paths", nargs="+", help="notebook files")
    notebooks.add_argument("--timeout", type=int, default=600, help="seconds allowed per cell")
    notebooks.set_defaults(run=_notebooks)
    return parser


def _os_error_line(err: OSError) -> str:
    """One line for a file-system error: what went wrong, with which path, and what to do."""
    if err.filename is None:            # raised by this package, with its own message
        return str(err)
    path = err.filename
    if isinstance(err, FileNotFoundError):
        return f"{err.strerror or err}: {path}; check the path"
    if isinstance(err, (FileExistsError, NotADirectoryError)):
        return f"{path} is a file where a folder is needed; choose a folder (or a new name) instead"
    if isinstance(err, IsADirectoryError):
        return f"{path} is a folder where a file is needed; name a file instead"
    if isinstance(err, PermissionError):
        return f"no permission to write {path}; choose a place you can write to"
    return f"{err.strerror or err}: {path}"


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        args.run(args)
    except ValueError as err:           # bad input or settings, including corrupt JSON (a ValueError)
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    except OSError as err:              # a path that is missing, of the wrong kind or not writable
        print(f"error: {_os_error_line(err)}", file=sys.stderr)
        raise SystemExit(2) from None
    except LessonCellError as err:      # `notebooks`: a lesson cell failed (a few lines, not a traceback)
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(1) from None
