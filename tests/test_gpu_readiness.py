"""Scale-out readiness (issue 15) testable on a CPU: bounded anchors on huge splits, FID without
TF32, GPU runs sampling on the GPU."""

import torch

from mtdiff.metrics import gaussian_baseline


def test_gaussian_baseline_in_chunks_matches_one_pass_and_the_moments():
    g = torch.Generator().manual_seed(0)
    images = (torch.rand(300, 3, 8, 8, generator=g) * 2 - 1) * torch.linspace(0.2, 1, 8)
    whole = gaussian_baseline(images, 20_000, seed=4, chunk=10_000)
    chunked = gaussian_baseline(images, 20_000, seed=4, chunk=7)
    # float64 sums in another order may move a value sitting exactly on a rounding edge: rare
    assert (whole != chunked).float().mean() < 1e-3
    u8 = ((images + 1) * 127.5).round()
    assert torch.allclose(chunked.double().mean(0), u8.double().mean(0), atol=3.0)
    assert torch.allclose(chunked.double().std(0), u8.double().std(0, unbiased=False), rtol=0.15, atol=2.0)


class _HugeSplit(torch.utils.data.Dataset):
    """A lazy split of ImageNet's size that decodes nothing until asked, and counts what it decodes."""

    decoded = 0

    def __init__(self, split, image_size, num_samples, **_):
        from mtdiff.data import DatasetInfo

        self.n = min(1_281_167 if split == "train" else 50_000, num_samples or 10**9)
        self.info = DatasetInfo(name="huge", channels=3, image_size=image_size, num_classes=10, num_mask_classes=0,
                                class_names=(), mask_class_names=(), modalities=("image", "label"))

    def __len__(self):
        return self.n

    def numpy(self):
        import numpy as np

        _HugeSplit.decoded += self.n
        g = np.random.default_rng(0)
        return {"images": g.integers(0, 256, (self.n, 3, self.info.image_size, self.info.image_size), dtype=np.uint8),
                "labels": g.integers(0, 10, self.n)}


def test_anchors_decode_a_bounded_sample_of_a_huge_split(monkeypatch, tmp_path):
    """ImageNet-64-sized anchors: the real floor reads eval.num_samples test images, the Gaussian
    at most GAUSSIAN_FIT_IMAGES training images, never the 1.28M training split."""
    import dataclasses

    from mtdiff import data, evaluate
    from mtdiff.config import load_config

    spec = dataclasses.replace(data.DATASETS["cifar10"], name="huge", loader=_HugeSplit, needs_root=False,
                               options={}, default_image_size=8, min_image_size=8)
    monkeypatch.setitem(data.DATASETS, "huge", spec)
    cfg = load_config(None, {"data": {"dataset": "huge", "image_size": 8}, "eval": {"reference_split": "test",
                                                                                     "num_samples": 300}})
    seen = []

    def fake_fidelity(cfg, images, reference, *args, **kwargs):
        seen.append((len(images), len(reference)))
        return {"fid": 1.0}, "domain", 0.0, {}

    monkeypatch.setattr(evaluate, "_fidelity", fake_fidelity)
    monkeypatch.setattr(evaluate, "GAUSSIAN_FIT_IMAGES", 2_000)
    _HugeSplit.decoded = 0
    records = evaluate.anchors(cfg, None, tmp_path / "anchors.jsonl")
    # reference (test, 50k) + real floor (train, first 300) + Gaussian fit (train, first 2,000)
    assert _HugeSplit.decoded == 50_000 + 300 + 2_000
    assert seen == [(300, 50_000), (300, 50_000)]  # the Gaussian draws eval.num_samples too
    assert {r["model"] for r in records} == {"real_floor", "gaussian_baseline"}
    assert all(r["precision"] is None and r["device"] is None for r in records)  # no network ran


def test_fid_features_are_extracted_without_tf32_and_settings_restored():
    from mtdiff.metrics import fidelity

    prev = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    try:
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = True  # as train.tf32 leaves them
        with fidelity.full_precision_matmuls():
            assert (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32) == (False, False)
        assert (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32) == (True, True)
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = prev


def test_sampling_defaults_to_the_device_the_run_was_trained_for(tmp_path):
    import yaml

    from mtdiff.cli import run_device
    from mtdiff.config import load_config

    cfg = load_config(None, {"train": {"device": "cuda"}})
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict()))
    assert run_device(str(tmp_path), None) == "cuda"  # a GPU run: fails fast on a node without one
    assert run_device(str(tmp_path), "cpu") == "cpu"  # --device wins
    assert run_device(str(tmp_path / "missing"), None) == "auto"  # a bare checkpoint file: as before
