"""An instrument classifier for note log-mel patches: the yardstick for generated notes.

Lessons 03 and 04 generate single notes (a GAN, a VAE) and need a number beside the
listening test: does a generated patch look like *some* instrument, and which? A
small convolutional classifier trained on the real notes answers both; how many
different instruments it finds among the samples measures mode coverage. The same
idea, on whole clips, is behind the paper's KLD metric (lesson 09).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.data import TensorDataset

from mlm_lessons.config import TrainConfig
from mlm_lessons.train import Trainer
from mlm_lessons.vae import ConvEncoder, NoteMelPatches


def classifier_objective(input_noise_std: float = 0.3):
    """Cross-entropy on ``(patches, instrument_ids)`` batches, logging accuracy.

    Gaussian noise on the inputs keeps the classifier from being thrown by the small
    imperfections of generated patches, which it never sees in training.
    """
    def objective(classifier, batch):
        patches, instrument_ids = batch                                  # (batch, 1, n_mels, frames), (batch,)
        logits = classifier(patches + input_noise_std * torch.randn_like(patches))
        accuracy = (logits.argmax(1) == instrument_ids).float().mean()
        return F.cross_entropy(logits, instrument_ids), {"accuracy": accuracy}

    return objective


def train_instrument_classifier(notes: NoteMelPatches, steps: int = 400, device: str = "cpu",
                                seed: int = 0) -> ConvEncoder:
    """Train a :class:`~mlm_lessons.vae.ConvEncoder` with one output per instrument; returned in eval mode.

    About 5 s on one CPU core for the default 260 notes and 400 steps.
    """
    torch.manual_seed(seed)  # the initial weights; the training loop seeds the rest
    classifier = ConvEncoder(len(notes.instruments), notes.patch_shape)
    config = TrainConfig(batch_size=64, max_steps=steps, learning_rate=2e-3, device=device, log_every=100,
                         checkpoint_every=0, seed=seed)
    Trainer(classifier, config, TensorDataset(notes.patches, notes.instrument_ids), classifier_objective(),
            progress=False).fit()
    return classifier.eval()


@torch.no_grad()
def recognised(classifier: ConvEncoder, patches: torch.Tensor, threshold: float = 0.8
               ) -> tuple[float, torch.Tensor]:
    """How many ``(batch, 1, n_mels, frames)`` patches the classifier calls one instrument with confidence.

    Returns:
        ``(fraction, counts)``: the fraction with top probability above ``threshold``, and
        ``(num_instruments,)`` int64 counts of the predicted instrument among those.
    """
    device = next(classifier.parameters()).device
    probabilities = classifier(patches.to(device)).softmax(1).cpu()
    confident = probabilities.max(1).values > threshold
    counts = torch.bincount(probabilities.argmax(1)[confident], minlength=probabilities.shape[1])
    return confident.float().mean().item(), counts
