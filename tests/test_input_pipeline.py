"""The training input pipeline: workers give the batches the main process gives, errors name the file."""

import pytest
import torch

from lib.data import fake_imagenet, imagenet
from lib.train import (
    Augmented,
    GlobalBatchSampler,
    Recipe,
    SeededBatches,
    build_augmentation,
    default_workers,
    make_loader,
)

MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return fake_imagenet.write(tmp_path_factory.mktemp("fake_imagenet"), classes=3, per_class=4, splits=("train",),
                               min_size=40, max_size=60)


def _batches(dataset, workers, epochs=2, seed=3):
    sampler = SeededBatches(GlobalBatchSampler(len(dataset), 5, seed), seed)
    loader = make_loader(dataset, "cpu", workers, seed=seed, batch_sampler=sampler)
    out = []
    for epoch in range(epochs):
        sampler.set_epoch(epoch)
        out += [(x.clone(), y.clone()) for x, y in loader]
    return out


def test_two_workers_give_the_batches_of_the_main_process(root):
    found = imagenet.scan(root, "train")
    files = imagenet.ImageFiles(found["files"], found["labels"], MEAN, STD, image_size=32, augment=True)
    dataset = Augmented(files, build_augmentation(("flip", "crop"), 32))
    state = torch.get_rng_state()
    main = _batches(dataset, 0)
    assert torch.equal(torch.get_rng_state(), state)  # augmentation draws from its own seeded stream
    workers = _batches(dataset, 2)
    assert len(main) == len(workers) == 4
    for (x0, y0), (x2, y2) in zip(main, workers):
        assert torch.equal(x0, x2) and torch.equal(y0, y2)
    assert not torch.equal(main[0][0], main[2][0])  # another epoch, other augmentations
    assert not torch.equal(_batches(dataset, 0, epochs=1, seed=4)[0][0], main[0][0])


def test_a_file_that_fails_to_decode_is_named_from_a_worker(root, tmp_path):
    bad = tmp_path / "n00000000_bad.JPEG"
    bad.write_bytes(b"not a jpeg")
    files = imagenet.ImageFiles([bad], [0], MEAN, STD, image_size=32)
    loader = make_loader(files, "cpu", 1, batch_size=1)
    with pytest.raises(Exception, match="n00000000_bad.JPEG"):
        next(iter(loader))


def test_default_workers_only_for_decoded_files(root):
    found = imagenet.scan(root, "train")
    files = imagenet.ImageFiles(found["files"], found["labels"], MEAN, STD, image_size=32)
    assert default_workers(torch.utils.data.TensorDataset(torch.zeros(2, 3))) == 0
    assert default_workers(Augmented(files, None)) == default_workers() >= 0
    assert default_workers() <= 8


def test_execution_settings_are_not_part_of_a_runs_identity():
    base = Recipe()
    assert Recipe(num_workers=3, prefetch_factor=4, compile=True, channels_last=False).identity() == base.identity()
    assert "num_workers" not in base.identity() and Recipe(lr=0.1).identity() != base.identity()
    with pytest.raises(ValueError, match="num_workers"):
        Recipe(num_workers=-1)
