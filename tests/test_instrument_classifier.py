"""The instrument classifier tells instruments apart and is not fooled by noise."""

import torch

from mlm_lessons import instrument_classifier, vae


def test_classifier_recognises_held_out_notes_and_rejects_noise():
    instruments = ("flute", "violin", "piano", "organ")
    train_notes = vae.note_mel_patches(instruments=instruments, pitches=range(48, 73, 2), velocities=(0.6, 0.9))
    held_out = vae.note_mel_patches(instruments=instruments, pitches=range(49, 72, 4), velocities=(0.75,))
    held_out_patches = (held_out.to_log_mel(held_out.patches) - train_notes.mean) / train_notes.std  # train scaling

    classifier = instrument_classifier.train_instrument_classifier(train_notes, steps=150, seed=0)
    assert not classifier.training
    with torch.no_grad():
        accuracy = (classifier(held_out_patches).argmax(1) == held_out.instrument_ids).float().mean()
    assert accuracy > 0.8, f"held-out pitches classified at {accuracy:.0%}"

    fraction_real, counts = instrument_classifier.recognised(classifier, held_out_patches, threshold=0.8)
    fraction_noise, _ = instrument_classifier.recognised(
        classifier, torch.randn(len(held_out_patches), 1, 64, 32, generator=torch.Generator().manual_seed(0)) * 3,
        threshold=0.8)
    assert counts.shape == (len(instruments),) and int(counts.sum()) == round(fraction_real * len(held_out_patches))
    assert (counts > 0).sum() == len(instruments), "every instrument is found among real notes"
    assert fraction_real > fraction_noise
