"""Batches of encoded examples: caption dropout per sample, batches that never mix sizes."""
import torch


def _example(core, i, size=4, tokens=3):
    return core.examples.Example(torch.zeros(16, size, size), torch.full((tokens, 8), float(i + 1)), torch.full((8,), float(i + 1)))


def test_caption_dropout_in_batches(core):
    ex = core.examples
    examples = [_example(core, i) for i in range(4)]
    empty = (torch.zeros(3, 8), torch.zeros(8))
    _, ctx, pooled = ex.collate(examples, empty, 0.0, torch.Generator().manual_seed(0))
    assert ctx[:, 0, 0].tolist() == [1, 2, 3, 4]
    _, ctx, pooled = ex.collate(examples, empty, 0.999, torch.Generator().manual_seed(0))
    assert ctx.abs().sum() == 0 and pooled.abs().sum() == 0
    _, ctx, _ = ex.collate(examples, empty, 0.5, torch.Generator().manual_seed(1))
    kept = ctx[:, 0, 0].tolist()
    assert 0 < sum(v > 0 for v in kept) < 4 and all(v in (0, i + 1) for i, v in enumerate(kept))


def test_epoch_batches_visit_every_example_and_never_mix_sizes(core):
    ex = core.examples
    examples = [_example(core, i, size=4 if i < 5 else 8) for i in range(8)]
    batches = ex.epoch_batches(examples, 2, torch.Generator().manual_seed(0))
    first_epoch = [next(batches) for _ in range(3)]  # sizes 4 (5 -> 2 full batches) and 8 (3 -> 1 full batch)
    assert all(len({examples[i].latent.shape for i in b}) == 1 for b in first_epoch)
    assert len({i for b in first_epoch for i in b}) == 6
