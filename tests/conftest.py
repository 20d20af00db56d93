"""Fixtures shared by the test modules."""

from __future__ import annotations

import pytest
import torch

from mlm_lessons import pipeline


@pytest.fixture(scope="module")
def shipped():
    """The tiny pipeline shipped in data/checkpoints (one thread: the models are small)."""
    torch.set_num_threads(1)
    return pipeline.shipped_pipeline()


@pytest.fixture(scope="module")
def shipped_folder(shipped, tmp_path_factory):
    """That pipeline saved as a folder (``MusicLM.save``)."""
    return shipped.save(tmp_path_factory.mktemp("pipeline") / "tiny")
