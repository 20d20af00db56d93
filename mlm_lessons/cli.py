"""Command line: ``python -m mlm_lessons <command>``.

Commands:
    data       write the SynthCaps course data (wav clips + MusicCaps-style manifest)
    demo       generate clips for a few prompts with the shipped MusicLM, beside synthesised references,
               with spectrograms and a page that plays them
    train      train a model of the pipeline, resumable (--stage soundstream | w2v_bert | mulan |
               semantic | coarse | fine), or all of them in order (--stage all)
    tokens     turn a dataset into token files for the MusicLM stages (resumable)
    generate   music from text prompts with a trained pipeline (the shipped tiny one by default)
    evaluate   score a pipeline like the paper (FAD, KLD, MCC, attribute accuracy, memorisation)
    notebooks  execute lesson notebooks in place, storing their outputs
    assignments  student versions of the lessons, grading and validation (nbgrader)

Your own music (train, tokens): --data FILE.csv --audio DIR
    The CSV is in MusicCaps' format: columns ytid and caption are needed; aspect_list, start_s/end_s
    and is_audioset_eval are read where present. A row's audio is the file in DIR (default: the CSV's
    folder, subfolders too) named <ytid>.wav (.flac, .ogg, .mp3, or <ytid>_<start>-<end>.wav), read at
    the preset's sample rate and cut into clips of its length (data.clip_seconds): consecutive pieces, a
    last one ending at the recording's end if at least half a clip is left; a shorter recording is padded
    with silence. Rows whose file is missing or unreadable are skipped, and counted. Held out, never
    trained on: rows with is_audioset_eval True (MusicCaps' evaluation split) or, without that column,
    about 10% of rows picked by a hash of the ytid (the same rows on every run and machine). MuLan pairs
    a clip with its row's caption and aspect list; token files are named <ytid>-00, <ytid>-01, ...

The whole pipeline: train --stage all --out DIR [--steps N]
    soundstream, w2v_bert, mulan, then the token files of every clip (made with those three, in
    DIR/tokens), then semantic, coarse, fine: each in its run folder DIR/<stage>, exported to
    DIR/pipeline/ (soundstream.pt, w2v-bert.pt, mulan.pt, semantic.pt, coarse.pt, fine.pt). --steps
    applies to every stage. A stage is finished when its exported file is there and its run has done
    the steps asked for: a rerun skips it, and resumes an interrupted one. Use one DIR per dataset.
"""

from __future__ import annotations

import argparse
import errno
import sys
from pathlib import Path
from typing import NamedTuple

from mlm_lessons.notebook_runner import LessonCellError


def _data(args: argparse.Namespace) -> None:
    from mlm_lessons import datasets

    out = args.out or datasets.default_synthcaps_folder(args.preset, args.num_clips)
    manifest = datasets.write_synthcaps(out, preset=args.preset, num_clips=args.num_clips,
                                        seed=args.seed, progress=not args.quiet)
    print(f"wrote {manifest}")


def _demo(args: argparse.Namespace) -> None:
    from mlm_lessons import demo

    page = demo.write_demo(args.out, prompts=args.prompt or None, seconds=args.seconds, seed=args.seed,
                           pipeline=args.pipeline, progress=not args.quiet)
    print(f"wrote {page} -- open it in a browser to look and listen")


MODEL_STAGES = ("soundstream", "w2v_bert", "mulan")
MUSICLM_STAGES = ("semantic", "coarse", "fine")
STAGES = (*MODEL_STAGES, *MUSICLM_STAGES)
#: ``train --stage all``: the part of ``pipeline.PART_FILES`` each stage is exported as, in ``OUT/pipeline/``.
PIPELINE_PARTS = {"soundstream": "codec", "w2v_bert": "semantic_tokenizer", "mulan": "mulan",
                  "semantic": "semantic", "coarse": "coarse", "fine": "fine"}


class _ClipFile(NamedTuple):
    """What ``token_files.extract_tokens`` reads of a clip: its name and a file that holds it."""

    ytid: str
    path: Path


def _is_csv(data) -> bool:
    """``--data``: a CSV of captioned music (told by its name), else a SynthCaps folder."""
    return Path(data).suffix.lower() == ".csv"


def _preset(name: str, device: str | None = None):
    import dataclasses

    from mlm_lessons import config

    preset = config.get_preset(name)
    if device:
        preset = dataclasses.replace(preset, train=dataclasses.replace(preset.train, device=device))
    return preset


def _dataset(args: argparse.Namespace, num_clips: int | None = None):
    """``--data`` of ``train`` and ``tokens``: the path given, or the preset's SynthCaps folder (rendered if
    missing, with ``num_clips`` clips if given), once the options are checked to go together."""
    from mlm_lessons import datasets

    if args.data and num_clips:
        raise ValueError("--num-clips renders SynthCaps clips and --data reads yours: pass one of them, not both")
    if args.audio and not (args.data and _is_csv(args.data)):
        raise ValueError("--audio names the folder of a CSV's audio files: pass it with --data FILE.csv (a "
                         "SynthCaps folder holds its own audio)")
    return args.data or datasets.ensure_synthcaps(args.preset, num_clips=num_clips, progress=not args.quiet)


def _clips(args: argparse.Namespace, preset, data, split: str):
    """The clips of ``data`` (of ``split``, or ``"all"``) at the preset's sample rate: a SynthCaps folder's whole,
    or a CSV's audio files cut into clips of the preset's length, printing what was used and skipped."""
    from mlm_lessons import datasets

    if not _is_csv(data):
        return datasets.synthcaps_clips(data, preset.data.sample_rate, split)
    clips = datasets.music_clips(data, args.audio, preset.data.sample_rate, preset.data.clip_seconds,
                                 split=None if split == "all" else split, progress=not args.quiet)
    print(clips.summary)
    return clips


def _train(args: argparse.Namespace) -> None:
    import dataclasses
    import resource
    import time

    preset = _preset(args.preset, args.device)
    if args.compile:
        preset = dataclasses.replace(preset, train=dataclasses.replace(preset.train, compile=True))
    if args.stage in MUSICLM_STAGES and not args.tokens:
        raise ValueError(f"--stage {args.stage} learns from token files: make them with `python -m mlm_lessons "
                         "tokens --out DIR`, then pass --tokens DIR")
    if args.stage == "all" and (args.tokens or args.export or args.condition_on):
        raise ValueError("--stage all makes its own token files and exports every model into OUT/pipeline: drop "
                         "--tokens, --export and --condition-on")
    data = _dataset(args, args.num_clips)
    if args.stage == "all":
        _train_pipeline(args, preset, data)
        return
    started = time.time()
    if args.stage in MUSICLM_STAGES:
        condition_on = args.condition_on.split(",") if args.condition_on else None
        history, export = _train_musiclm_stage(args, preset, data, args.stage, args.tokens, args.out, condition_on)
    elif args.stage == "attributes":
        history, export = _train_attribute_classifier(args, preset, data)
    else:
        history, export = _train_model(args, preset, _clips(args, preset, data, "train"), args.stage, args.out)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    print(f"trained {history[-1]['step'] if history else 0} steps in {time.time() - started:.0f} s "
          f"({usage.ru_utime + usage.ru_stime:.0f} s of CPU time); checkpoint in {args.out}")
    if args.export:
        print(f"wrote {export(args.export)} ({Path(args.export).stat().st_size / 1e6:.1f} MB)")


def _train_model(args: argparse.Namespace, preset, clips, stage: str, out):
    """Train SoundStream, w2v-BERT or MuLan on ``clips`` (training clips) in the run folder ``out``, resuming it.
    Returns ``(history, export)``: ``export(path)`` writes the model as the later stages use it."""
    import torch

    from mlm_lessons import datasets

    progress = not args.quiet
    if stage == "soundstream":
        from mlm_lessons import soundstream

        training, history = soundstream.train_codec(preset, clips.audio, out, steps=args.steps, resume=True,
                                                    progress=progress)
        return history, training.codec.save
    if stage == "mulan":
        from mlm_lessons import mulan

        # A SynthCaps clip is paired with paraphrases and tag texts of its attributes; a clip of a CSV row, with
        # the row's caption and its aspect list (as one tag text).
        captions = [mulan.training_texts(record, preset.mulan) if isinstance(record, datasets.SynthCapsRecord)
                    else [record.caption, *([", ".join(record.aspects)] if record.aspects else [])]
                    for record in clips.records]
        musiccaps = datasets.find_musiccaps_csv()   # its wording widens the tokenizer's vocabulary, if present
        extra = [record.caption for record in datasets.load_musiccaps(musiccaps)] if musiccaps else []
        model, history = mulan.train_mulan(preset, clips.audio, captions, out, steps=args.steps, resume=True,
                                           progress=progress, extra_captions=extra)

        def export(path):  # the model with its MuLan-token quantiser, fitted on the training clips' audio
            model.fit_token_quantizer(torch.cat([model.embed_audio(torch.stack(clips.audio[start:start + 100]))
                                                 for start in range(0, len(clips.audio), 100)]))
            return model.save(path)
        return history, export
    from mlm_lessons import tokenize, w2v_bert

    model, history = w2v_bert.train_w2v_bert(preset, clips.audio, out, steps=args.steps, resume=True,
                                             progress=progress)

    def export(path):  # the encoder with its k-means centroids, fitted on the same clips
        tokenizer = tokenize.SemanticTokenizer.fit(model, clips.audio, preset.tokens.semantic_clusters,
                                                   seed=preset.train.seed, progress=progress)
        return tokenizer.save(path)
    return history, export


def _train_attribute_classifier(args: argparse.Namespace, preset, data):
    """``train --stage attributes``: the evaluation's judge (``evaluation.AttributeClassifier``) on the training
    clips of a SynthCaps folder, whose attributes are known. Returns ``(history, export)``."""
    from mlm_lessons import evaluation

    if _is_csv(data):
        raise ValueError("--stage attributes learns the attributes SynthCaps records (instrument, mood, tempo); a "
                         "CSV of your music has none: pass a SynthCaps folder as --data")
    clips = _clips(args, preset, data, "train")
    model, history = evaluation.train_attribute_classifier(
        clips.audio, [record.attributes for record in clips.records], preset.data.sample_rate, preset.features,
        steps=args.steps or 1500, out_dir=args.out, progress=not args.quiet)
    return history, model.save


def _train_musiclm_stage(args: argparse.Namespace, preset, data, stage: str, tokens, out, condition_on=None):
    """Train a MusicLM stage on the token files (in ``tokens``) of the training clips of ``data``, in the run
    folder ``out``, resuming it. Returns ``(history, export)`` like :func:`_train_model`."""
    from mlm_lessons import datasets, musiclm, token_files

    if _is_csv(data):
        # Which clips a row has is known only once its audio is cut: take the token files of the training rows.
        rows = {record.ytid for record in datasets.read_music_csv(data) if record.split == "train"}
        train_ids = sorted(path.stem for path in Path(tokens).glob("*.pt") if datasets.clip_row(path.stem) in rows)
        if not train_ids:
            raise ValueError(f"{tokens} holds no token files of the training rows of {data}; make them with "
                             f"`python -m mlm_lessons tokens --data {data} --out {tokens}`")
    else:
        train_ids = [record.ytid for record in datasets.read_synthcaps_manifest(data) if record.split == "train"]
    spec, clips = token_files.read_token_files(tokens, train_ids)
    model, history = musiclm.train_stage(preset, stage, clips, spec, out_dir=out, steps=args.steps,
                                         progress=not args.quiet, condition_on=condition_on)
    return history, model.save


def _steps_done(run: Path) -> int:
    """Optimiser steps done in a run folder (0 without a checkpoint)."""
    from mlm_lessons import train

    checkpoint = run / train.CHECKPOINT_NAME
    return train.load_checkpoint(checkpoint)["step"] if checkpoint.is_file() else 0


def _train_pipeline(args: argparse.Namespace, preset, data) -> None:
    """``train --stage all``: every model of MusicLM in order, each in its run folder ``OUT/<stage>`` and exported
    to ``OUT/pipeline/`` (``pipeline.PART_FILES``); after MuLan, the token files of every clip, made with the
    three models just trained, in ``OUT/tokens``. A stage is finished, and skipped, when its exported file is
    there and its run has done the requested steps; any other stage resumes (or starts) and is exported."""
    import time

    from mlm_lessons import token_files
    from mlm_lessons.pipeline import PART_FILES, MusicLM, write_manifest

    files = {stage: PART_FILES[part] for stage, part in PIPELINE_PARTS.items()}
    out = Path(args.out)
    folder, tokens = out / "pipeline", out / "tokens"
    steps = args.steps if args.steps is not None else preset.train.max_steps
    done = {stage: _steps_done(out / stage) for stage in STAGES}
    unfinished = {stage for stage in STAGES
                  if not ((folder / files[stage]).is_file() and done[stage] >= steps)}
    retrained = [stage for stage in MODEL_STAGES if stage in unfinished]
    if retrained and (tokens / token_files.SPEC_NAME).exists():
        # Models trained further give other tokens: neither the token files nor the stages would fit them.
        raise ValueError(f"{', '.join(retrained)} must be trained or exported again, which leaves the token files "
                         f"in {tokens} and the stages trained on them out of date: delete {tokens} and "
                         f"{', '.join(str(out / stage) for stage in MUSICLM_STAGES)} first, or use a fresh --out")
    loaded = []

    def clips():  # read once, and only if needed: a rerun with nothing left to do reads no audio
        if not loaded:
            loaded.append(_clips(args, preset, data, "all"))
        return loaded[0]

    def run(stage: str, train) -> None:   # train(stage) -> (history, export), as _train_model returns them
        export = folder / files[stage]
        if stage not in unfinished:
            print(f"{stage}: skipped ({done[stage]} steps done; {export} is there)")
            return
        started = time.time()
        history, save = train(stage)
        save(export)
        print(f"{stage}: trained {history[-1]['step'] if history else 0} steps in {time.time() - started:.0f} s "
              f"-> {export}")

    for stage in MODEL_STAGES:
        run(stage, lambda name: _train_model(args, preset, clips().of_split("train"), name, out / name))
    if unfinished & set(MUSICLM_STAGES):
        started = time.time()
        sources = {"codec": folder / files["soundstream"], "semantic": folder / files["w2v_bert"],
                   "mulan": folder / files["mulan"]}
        made = _extract_tokens(clips(), preset.data.sample_rate, tokens, sources, not args.quiet)
        print(f"tokens: made {made} token files in {time.time() - started:.0f} s -> {tokens}" if made else
              f"tokens: skipped (every clip has its token file in {tokens})")
    else:
        print("tokens: skipped (the stages that learn from them are finished)")
    for stage in MUSICLM_STAGES:
        run(stage, lambda name: _train_musiclm_stage(args, preset, data, name, tokens, out / name))
    if unfinished or not (folder / "pipeline.json").exists():
        write_manifest(folder)
    MusicLM.load(folder)                        # the parts fit together: generate with --pipeline OUT/pipeline
    print(f"pipeline in {folder}")


def _extract_tokens(clips, sample_rate: int, out, sources: dict[str, Path], progress: bool) -> int:
    """Write the token files of those ``clips`` (at ``sample_rate``) that have none in ``out`` yet, made by the
    codec, semantic tokenizer and MuLan files of ``sources``; returns how many were made.

    ``token_files.extract_tokens`` reads each clip from a file, so the clips are written, a batch at a time, to
    a temporary folder (as float samples: unrounded).
    """
    import tempfile

    from tqdm.auto import tqdm

    from mlm_lessons import audio, mulan, soundstream, token_files, tokenize

    models = (soundstream.SoundStream.load(sources["codec"]), tokenize.SemanticTokenizer.load(sources["semantic"]),
              mulan.MuLan.load(sources["mulan"]))
    todo = [index for index, name in enumerate(clips.ids) if not (Path(out) / f"{name}.pt").exists()]
    batch = 64
    with tempfile.TemporaryDirectory() as folder, tqdm(total=len(todo), desc=f"tokens -> {out}", unit="clip",
                                                         disable=not progress) as bar:
        for start in range(0, max(len(todo), 1), batch):   # once even with nothing to do: the models are checked
            records = [_ClipFile(clips.ids[index], audio.save_audio(Path(folder) / f"{clips.ids[index]}.wav",
                                                                     clips.audio[index], sample_rate, "FLOAT"))
                       for index in todo[start:start + batch]]
            token_files.extract_tokens(records, out, *models, sources, progress=False)
            for record in records:
                record.path.unlink()
            bar.update(len(records))
    return len(todo)


def _tokens(args: argparse.Namespace) -> None:
    from mlm_lessons import datasets, token_files

    checkpoints = datasets.default_data_root() / "checkpoints"
    sources = {"codec": Path(args.codec or checkpoints / f"soundstream-{args.preset}.pt"),
               "semantic": Path(args.semantic or checkpoints / f"w2v-bert-{args.preset}.pt"),
               "mulan": Path(args.mulan or checkpoints / f"mulan-{args.preset}.pt")}
    for name, path in sources.items():
        if not path.is_file():
            raise FileNotFoundError(f"no {name} model at {path}; train it (python -m mlm_lessons train --stage "
                                    f"{ {'codec': 'soundstream', 'semantic': 'w2v_bert', 'mulan': 'mulan'}[name]} "
                                    f"--export {path}) or pass --{name} FILE")
    preset = _preset(args.preset)
    clips = _clips(args, preset, _dataset(args), "all")
    _extract_tokens(clips, preset.data.sample_rate, args.out, sources, progress=not args.quiet)
    print(f"token files of {len(clips.ids)} clips in {args.out} ({token_files.SPEC_NAME} records what made them)")


def _load_pipeline(folder, device: str | None):
    from mlm_lessons import pipeline
    from mlm_lessons.train import resolve_device

    musiclm = pipeline.MusicLM.load(folder) if folder else pipeline.shipped_pipeline()
    return musiclm.to(resolve_device(device)) if device else musiclm


def _generate(args: argparse.Namespace) -> None:
    import time

    from mlm_lessons import audio, musiclm

    out = Path(args.out)
    if out.suffix.lower() not in audio.FILE_FORMATS:
        raise ValueError(f"--out {out} must name an audio file ({', '.join(audio.FILE_FORMATS)}); with "
                         "several prompts, -00, -01, ... are added to its name")
    temperatures = None
    if args.temperatures:
        values = [float(value) for value in args.temperatures.split(",")]
        if len(values) != len(musiclm.STAGES):
            raise ValueError(f"--temperatures takes one value per stage ({', '.join(musiclm.STAGES)}), e.g. "
                             f"1.0,0.95,0.4; got {args.temperatures!r}")
        temperatures = dict(zip(musiclm.STAGES, values))
    model = _load_pipeline(args.pipeline, args.device)
    started = time.time()
    clips = model.generate(args.prompts, args.seconds, temperatures=temperatures, top_k=args.top_k, seed=args.seed,
                           progress=not args.quiet)
    elapsed = time.time() - started
    paths = [out] if len(clips) == 1 else [out.with_name(f"{out.stem}-{index:02d}{out.suffix}")
                                          for index in range(len(clips))]
    out.parent.mkdir(parents=True, exist_ok=True)
    for path, clip, prompt in zip(paths, clips, args.prompts):
        audio.save_audio(path, clip, model.sample_rate)
        print(f"wrote {path}: {clip.shape[-1] / model.sample_rate:g} s of {prompt!r}")
    music = clips.shape[-1] / model.sample_rate * len(clips)
    print(f"{music:g} s of music in {elapsed:.1f} s ({elapsed / music:.2f} s per second of music)")


def _evaluate(args: argparse.Namespace) -> None:
    import time

    from mlm_lessons import datasets, evaluation

    model = _load_pipeline(args.pipeline, args.device)
    classifier_path = Path(args.classifier or datasets.default_data_root() / "checkpoints"
                           / f"attributes-{model.config.name}.pt")
    if not classifier_path.is_file():
        raise FileNotFoundError(f"no attribute classifier at {classifier_path}; train one (python -m mlm_lessons "
                                f"train --stage attributes --export {classifier_path}) or pass --classifier FILE")
    classifier = evaluation.AttributeClassifier.load(classifier_path)
    data = args.data or datasets.ensure_synthcaps(model.config.name, progress=not args.quiet)
    started = time.time()
    result = evaluation.evaluate_on_synthcaps(model, classifier, data, num_prompts=args.num_prompts, seed=args.seed,
                                              progress=not args.quiet)
    heading = f"{len(result.generated)} held-out prompts of {data}; FAD and KLD: lower is better, the rest: higher"
    memorised = result.memorisation_summary(model.config.tokens.semantic_frame_rate)
    report = "\n\n".join([heading, result.table(), memorised])
    print(report)
    print(f"evaluated in {time.time() - started:.0f} s")
    if args.out:
        from mlm_lessons.atomic import atomic_path

        with atomic_path(args.out) as temporary:
            Path(temporary).write_text(report + "\n")
        print(f"wrote {args.out}")


def _notebooks(args: argparse.Namespace) -> None:
    from mlm_lessons.notebook_runner import execute_notebook

    for path in args.paths:
        seconds = execute_notebook(path, timeout_per_cell=args.timeout)
        print(f"{path}: executed in {seconds:.1f} s")


# The docstring's sections on your own music and the whole pipeline close `train --help` and `tokens --help`.
_OWN_MUSIC_HELP = __doc__[__doc__.index("Your own music"):__doc__.index("The whole pipeline")]
_PIPELINE_HELP = __doc__[__doc__.index("The whole pipeline"):]
DATA_HELP = ("a SynthCaps folder (default: data/synthcaps-<preset>, rendered if missing), or a CSV of captioned "
             "music in MusicCaps' format (FILE.csv; columns ytid and caption, and aspect_list, start_s, end_s, "
             "is_audioset_eval if it has them), its audio files cut into clips of the preset's length")
AUDIO_HELP = ("with --data FILE.csv: the folder (and its subfolders) of the audio files, named <ytid>.wav (or "
              ".flac, .ogg, .mp3, or <ytid>_<start>-<end>.wav) (default: the CSV's folder)")


def build_parser(assignment_commands: bool = True) -> argparse.ArgumentParser:
    """The command line. With ``assignment_commands=False``, ``assignments`` is listed but its options are not
    built: they need nbgrader and nbclient, about 3 s to import, which no other command uses."""
    parser = argparse.ArgumentParser(prog="python -m mlm_lessons", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    if assignment_commands:
        from mlm_lessons import assignments

        assignments.add_commands(commands)
    else:
        commands.add_parser("assignments", help="student versions, validation and grading of the exercises")

    data = commands.add_parser("data", help="write the SynthCaps course data")
    data.add_argument("--preset", default="tiny", help="tiny | small | paper (default: tiny)")
    data.add_argument("--out", default=None,
                      help="output folder (default: data/synthcaps-<preset>, or data/synthcaps-<preset>-<N> with "
                           "--num-clips N)")
    data.add_argument("--num-clips", type=int, default=None, help="override the preset's clip count")
    data.add_argument("--seed", type=int, default=None, help="override the preset's seed")
    data.add_argument("--quiet", action="store_true", help="no progress bar")
    data.set_defaults(run=_data)

    demo = commands.add_parser("demo", help="generate clips for a few prompts beside synthesised references, "
                                            "with spectrograms and a page that plays them")
    demo.add_argument("--out", default="data/demo", help="output folder")
    demo.add_argument("--prompt", action="append", metavar="TEXT",
                      help="a description of the music; repeat for several (default: the demo's eight)")
    demo.add_argument("--seconds", type=float, default=4.0, help="length of each clip")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--pipeline", metavar="DIR", default=None,
                      help="a pipeline folder (train --stage all writes OUT/pipeline); default: the shipped tiny one")
    demo.add_argument("--quiet", action="store_true", help="no progress bar")
    demo.set_defaults(run=_demo)

    train = commands.add_parser("train", help="train a model of the pipeline, or all of them (resumes from --out)",
                                epilog=_OWN_MUSIC_HELP + _PIPELINE_HELP,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    train.add_argument("--preset", default="tiny", help="tiny | small | paper (default: tiny)")
    train.add_argument("--stage", required=True, choices=(*STAGES, "all", "attributes"),
                       help="which model to train; all: every one in order, each in OUT/<stage>, exported to "
                            "OUT/pipeline/, with the token files in OUT/tokens (a rerun skips finished stages); "
                            "attributes: the attribute classifier that `evaluate` judges clips with")
    train.add_argument("--data", default=None, help=DATA_HELP)
    train.add_argument("--audio", default=None, help=AUDIO_HELP)
    train.add_argument("--num-clips", type=int, default=None,
                       help="without --data: train on this many SynthCaps clips (rendered once into "
                            "data/synthcaps-<preset>-<N>) instead of the preset's")
    train.add_argument("--tokens", default=None,
                       help="semantic | coarse | fine: the folder of token files (python -m mlm_lessons tokens)")
    train.add_argument("--condition-on", default=None,
                       help="semantic | coarse | fine, for ablations: a comma-separated subset of the stage's usual "
                            "conditioning (e.g. --stage coarse --condition-on mulan: no semantic tokens)")
    train.add_argument("--out", required=True,
                       help="run folder: last.pt is written and resumed here (--stage all: the folder of the runs)")
    train.add_argument("--steps", type=int, default=None,
                       help="optimiser steps (default: the preset's; --stage all: of every stage)")
    train.add_argument("--device", default=None, help="cpu | cuda | auto (default: the preset's)")
    train.add_argument("--compile", action="store_true",
                       help="compile the loss computation with torch.compile (GPUs: faster steps after a first "
                            "minute of compiling)")
    train.add_argument("--export", default=None,
                       help="also write the trained model alone to this file (w2v_bert: with its k-means "
                            "centroids; mulan: with its tokenizer and token quantiser; a MusicLM stage: with the "
                            "configuration it was built from)")
    train.add_argument("--quiet", action="store_true", help="no progress bar")
    train.set_defaults(run=_train)

    tokens = commands.add_parser("tokens", help="turn a dataset into the token files the MusicLM stages learn from",
                                 epilog=_OWN_MUSIC_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    tokens.add_argument("--preset", default="tiny",
                        help="tiny | small | paper (default: tiny): which shipped models, and the clips' length and "
                             "sample rate")
    tokens.add_argument("--data", default=None, help=DATA_HELP)
    tokens.add_argument("--audio", default=None, help=AUDIO_HELP)
    tokens.add_argument("--out", required=True, help="folder for one token file per clip (resumed if present)")
    tokens.add_argument("--codec", default=None,
                        help="SoundStream file (default: data/checkpoints/soundstream-<preset>.pt)")
    tokens.add_argument("--semantic", default=None,
                        help="semantic tokenizer file (default: data/checkpoints/w2v-bert-<preset>.pt)")
    tokens.add_argument("--mulan", default=None, help="MuLan file (default: data/checkpoints/mulan-<preset>.pt)")
    tokens.add_argument("--quiet", action="store_true", help="no progress bar")
    tokens.set_defaults(run=_tokens)

    generate = commands.add_parser("generate", help="music from text: one audio file per prompt")
    generate.add_argument("prompts", nargs="+", metavar="PROMPT", help="descriptions of the music, e.g. 'a calming "
                          "violin melody backed by a distorted guitar riff'")
    generate.add_argument("--out", default="clip.wav",
                          help="audio file to write (default: clip.wav); with several prompts clip-00.wav, ...")
    generate.add_argument("--seconds", type=float, default=4.0, help="length of each clip (default: 4)")
    generate.add_argument("--seed", type=int, default=0, help="the same seed and prompts give the same music")
    generate.add_argument("--temperatures", default=None, metavar="S,C,F",
                          help="sampling temperatures of the semantic, coarse and fine stages (default: the "
                               "pipeline's configuration, e.g. 1.0,0.95,0.4 as in the paper)")
    generate.add_argument("--top-k", type=int, default=None, help="sample among the k most likely tokens only")
    generate.add_argument("--pipeline", metavar="DIR", default=None,
                          help="a pipeline folder (train --stage all writes OUT/pipeline); default: the shipped tiny")
    generate.add_argument("--device", default=None, help="cpu | cuda | auto (default: cpu)")
    generate.add_argument("--quiet", action="store_true", help="no progress bar")
    generate.set_defaults(run=_generate)

    evaluate = commands.add_parser("evaluate", help="score a pipeline like the paper (FAD, KLD, MCC) beside baselines")
    evaluate.add_argument("--pipeline", metavar="DIR", default=None,
                          help="a pipeline folder (default: the shipped tiny one)")
    evaluate.add_argument("--data", default=None,
                          help="a SynthCaps folder: its test captions are the prompts, its valid clips FAD's "
                               "reference, its train clips the memorisation check (default: the preset's)")
    evaluate.add_argument("--num-prompts", type=int, default=64, help="held-out prompts to generate (default: 64)")
    evaluate.add_argument("--classifier", default=None,
                          help="attribute classifier (default: data/checkpoints/attributes-<preset>.pt)")
    evaluate.add_argument("--seed", type=int, default=0)
    evaluate.add_argument("--device", default=None, help="cpu | cuda | auto (default: cpu)")
    evaluate.add_argument("--out", default=None, help="also write the report (Markdown) to this file")
    evaluate.add_argument("--quiet", action="store_true", help="no progress bar")
    evaluate.set_defaults(run=_evaluate)

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
    if err.errno == errno.EROFS:
        return f"{path} is on a read-only file system; choose a place you can write to"
    return f"{err.strerror or err}: {path}"


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser(assignment_commands=bool(argv) and argv[0] == "assignments").parse_args(argv)
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
