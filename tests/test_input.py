"""The training input path (rsbkit.data.TrainInput): what the loader hands over for each kind of data,
the device half's statistics against timm's per-image transform, per-sample seeds that make an epoch
independent of what ran before it (persistent workers, resume), and decoding with a corrupt file."""
from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from rsbkit.augment import DeviceAugment, Policy, decode_images, draw
from rsbkit.data import Data, TrainInput, input_kind, load_data, sample_seed
from rsbkit.errors import DataError, RecipeError
from rsbkit.recipes import A3, plan_batch, smoke


def _epoch(source, seed, device_seed=0, n=None):
    generator = torch.Generator().manual_seed(device_seed)
    out = []
    for images, labels, _ in source.epoch(seed, generator):
        out.append((images, labels))
        if n is not None and len(out) == n:
            break
    return out


def test_each_kind_of_data_gets_its_input(embedded, image_folder):
    recipe = smoke(A3, batch_size=16)
    cpu = torch.device("cpu")
    assert input_kind(embedded, recipe, "device", "auto", cpu) == "arrays"  # in-memory arrays: cropped on the device
    folder = load_data(image_folder)
    assert input_kind(folder, recipe, "device", "auto", cpu) == "crops"  # files on CPU: PIL decodes and crops
    assert input_kind(folder, recipe, "device", "device", cpu) == "encoded"  # decode_jpeg on the device
    assert input_kind(folder, recipe, "device", "auto", torch.device("cuda")) == "encoded"  # nvJPEG on CUDA
    assert input_kind(folder, recipe, "loader", "device", cpu) == "loader"
    not_files = Data("pil", _PilImages(), embedded.val, embedded.classes, "in memory")
    assert input_kind(not_files, recipe, "device", "auto", cpu) == "crops"
    with pytest.raises(DataError, match="decode_on: device needs a folder"):
        input_kind(not_files, recipe, "device", "device", cpu)
    plan = plan_batch(recipe)
    for data, decode_on in ((embedded, "auto"), (folder, "auto"), (folder, "device")):
        source = TrainInput(data, recipe, plan, augment_on="device", decode_on=decode_on, channels_last=True)
        images, labels = _epoch(source, 0, n=1)[0]
        assert images.shape == (16, 3, recipe.train_res, recipe.train_res) and images.dtype == torch.float32
        assert images.is_contiguous(memory_format=torch.channels_last) and labels.shape == (16,)
        assert -2.2 < images.min() and images.max() < 2.7  # normalised with ImageNet's mean and std


class _PilImages(torch.utils.data.Dataset):
    def __len__(self):
        return 4

    def __getitem__(self, i):
        return Image.new("RGB", (8, 8)), 0


@pytest.mark.parametrize("augment_on, workers", [("loader", 1), ("device", 0), ("device", 1)])
def test_an_epoch_does_not_depend_on_the_epochs_before_it(embedded, augment_on, workers):
    """Persistent workers keep running across epochs; each sample is seeded from (epoch seed, position),
    so epoch 2 is the same whether epoch 1 ran in this loader or not: what exact resume needs."""
    data = load_data(embedded, limit_train=96)
    recipe = smoke(A3, batch_size=16)
    plan = plan_batch(recipe)

    def source():
        return TrainInput(data, recipe, plan, augment_on=augment_on, workers=workers)

    a = source()
    _epoch(a, seed=1)
    second = _epoch(a, seed=2, device_seed=2)
    fresh = _epoch(source(), seed=2, device_seed=2)
    assert all(torch.equal(x, y) and torch.equal(lx, ly) for (x, lx), (y, ly) in zip(second, fresh))
    assert not torch.equal(second[0][0], _epoch(source(), seed=3, device_seed=2)[0][0])
    if workers:
        assert a.loader.persistent_workers


def test_copies_of_a_repeated_image_are_augmented_differently(embedded):
    data = load_data(embedded, limit_train=300)
    recipe = smoke(A3, batch_size=32).replace(aug_repeats=3, aa=None, scale=(0.08, 1.0))
    source = TrainInput(data, recipe, plan_batch(recipe), augment_on="loader")
    source.sampler.set_epoch(5)
    keys = list(source.sampler)
    first = keys[0][0]
    copies = [k for k in keys if k[0] == first]
    assert len(copies) == 3 and len({seed for _, seed in copies}) == 3
    assert sample_seed(5, 0) != sample_seed(5, 1) != sample_seed(6, 0)


def test_device_augmentation_matches_timms_transform_in_distribution(embedded):
    """The same recipe through timm's per-image transform and through the device half, over 1,536
    Fashion-MNIST images: per-channel mean and spread of the normalised pixels, and how often a pixel
    is exactly the fill colour (rotate, shear, translate and crops outside the image)."""
    data = load_data(embedded, limit_train=1536)
    recipe = A3.replace(model="resnet10t", train_res=32, test_res=32, batch_size=256, scale=(0.25, 1.0), epochs=1, warmup_epochs=0)
    plan = plan_batch(recipe, micro_batch=256)
    stats = {}
    for where in ("loader", "device"):
        source = TrainInput(data, recipe, plan, augment_on=where)
        images = torch.cat([x for x, _ in _epoch(source, 0)])
        fill = (torch.tensor([124, 116, 104]).view(1, 3, 1, 1) / 255 - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)) \
            / torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
        stats[where] = dict(mean=images.mean(dim=(0, 2, 3)), std=images.std(dim=(0, 2, 3)),
                            fill=((images - fill).abs() < 0.02).all(dim=1).float().mean())
    loader, device = stats["loader"], stats["device"]
    assert torch.allclose(loader["mean"], device["mean"], atol=0.04), (loader, device)
    assert torch.allclose(loader["std"], device["std"], rtol=0.05), (loader, device)
    assert abs(loader["fill"] - device["fill"]) < 0.01 and device["fill"] > 0.005, (loader, device)


def test_random_interpolation_draws_bicubic_half_the_time():
    policy = Policy.from_timm("rand-m9-mstd0.5-inc1")
    d = draw(policy, 20000, generator=torch.Generator().manual_seed(0), interpolation="random")
    assert abs(d.bicubic.float().mean() - 0.5) < 0.01
    assert draw(policy, 10, interpolation="bilinear").bicubic is None
    assert draw(policy, 10, interpolation="bicubic").bicubic.all()


def test_bicubic_rotation_follows_pil(photo_batch):
    """Images flagged bicubic are rotated bicubically: about half as far from PIL's bicubic rotate as a
    bilinear rotation is (torch's cubic kernel is a = -0.75, PIL's a = -0.5), and the others bilinearly."""
    from timm.data import auto_augment as taa

    from rsbkit.augment import FILL, apply_op

    imgs, tensor = photo_batch
    arg = torch.full((4,), 20.0)
    mixed = apply_op(tensor.clone(), "Rotate", arg, bicubic=2)  # the first two bicubic
    bilinear = apply_op(tensor.clone(), "Rotate", arg)
    for i, im in enumerate(imgs):
        pil = {mode: torch.from_numpy(np.asarray(taa.rotate(im, 20.0, fillcolor=FILL, resample=mode))).permute(2, 0, 1).float()
               for mode in (Image.BICUBIC, Image.BILINEAR)}
        if i < 2:
            ours, theirs = (mixed[i] - pil[Image.BICUBIC]).abs().mean(), (bilinear[i] - pil[Image.BICUBIC]).abs().mean()
            assert ours < 2.0 and ours < 0.6 * theirs, (i, ours, theirs)
        else:
            assert torch.equal(mixed[i], bilinear[i]) and (mixed[i] - pil[Image.BILINEAR]).abs().mean() < 1.0


@pytest.fixture(scope="module")
def photo_batch():
    from rsbkit.explore.images import photos

    imgs = [im.crop((0, 0, 96, 96)) for im in photos(size=96).values()]
    return imgs, torch.stack([torch.from_numpy(np.array(im)).permute(2, 0, 1) for im in imgs]).float()


def test_decoding_on_the_device_names_a_corrupt_file(image_folder):
    files = sorted((image_folder / "train" / "class0").iterdir())[:3]
    encoded = [torch.frombuffer(bytearray(p.read_bytes()), dtype=torch.uint8) for p in files]
    encoded.insert(1, torch.frombuffer(bytearray(b"\xff\xd8\xff not really a jpeg"), dtype=torch.uint8))
    png = io.BytesIO()
    Image.new("L", (20, 10), 7).save(png, format="PNG")
    encoded.append(torch.frombuffer(bytearray(png.getvalue()), dtype=torch.uint8))
    images, bad = decode_images(encoded, torch.device("cpu"))
    assert [i for i, _ in bad] == [1] and len(images) == 4
    assert all(im.dtype == torch.uint8 and im.shape[0] == 3 for im in images)  # grey JPEGs and PNGs come as RGB
    assert images[-1].shape == (3, 10, 20)
    pil = torch.from_numpy(np.asarray(Image.open(files[0]).convert("RGB"))).permute(2, 0, 1)
    assert (images[0].float() - pil.float()).abs().mean() < 2  # libjpeg's and PIL's decoders, up to IDCT rounding


def test_a_training_run_skips_a_corrupt_file_decoded_on_the_device(tmp_path, image_folder, smoke_recipe):
    from rsbkit.train import train

    (image_folder / "train" / "class0" / "broken.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")
    recipe = smoke_recipe.replace(batch_size=8, augment_on="device", decode_on="device")
    result = train(recipe, image_folder, tmp_path / "run", workers=0, progress="none", log=lambda s: None)
    assert result["status"] == "completed" and result["resolved"]["input"] == "encoded"
    assert [f["path"] for f in result["skipped_files"]] == [str(image_folder / "train" / "class0" / "broken.jpg")]


def test_variable_size_images_are_cropped_by_their_own_sizes():
    recipe = A3.replace(train_res=16, aa=None, hflip=0.0)
    images = [torch.full((3, 30, 40), 10, dtype=torch.uint8), torch.full((3, 50, 20), 200, dtype=torch.uint8)]
    out = DeviceAugment(recipe)(images, torch.Generator().manual_seed(0))
    pixel = out * DeviceAugment(recipe).std + DeviceAugment(recipe).mean
    # no crop box reaches into the zero padding of the shared batch: every pixel keeps its image's value
    assert torch.allclose(pixel[0], torch.tensor(10.0), atol=0.01) and torch.allclose(pixel[1], torch.tensor(200.0), atol=0.01)


def test_the_device_path_refuses_what_it_cannot_do():
    with pytest.raises(RecipeError, match="color_jitter .* set augment_on: loader"):
        A3.replace(augment_on="device", color_jitter=0.4)
    with pytest.raises(RecipeError, match="aa='augmix-m5-w4-d2' runs only in the loader"):
        A3.replace(augment_on="device", aa="augmix-m5-w4-d2")
    from rsbkit.train import resolve_augment_on

    assert resolve_augment_on(A3.replace(color_jitter=0.4), torch.device("cpu")) == "loader"  # auto falls back
    assert resolve_augment_on(A3, torch.device("cpu")) == "device"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_device_augmentation_never_waits_for_the_gpu():
    """With CUDA's sync debug mode set to error, a whole batch's crop, flip, RandAugment (bicubic and bilinear)
    and normalisation run without one host-device synchronisation."""
    recipe = A3.replace(train_res=64, aa="rand-m9-mstd0.5-inc1")
    images = torch.randint(0, 256, (64, 3, 96, 96), dtype=torch.uint8, device="cuda")
    augment = DeviceAugment(recipe)
    generator, draws = torch.Generator("cuda").manual_seed(0), torch.Generator().manual_seed(0)
    augment(images, generator, draws)  # first call: allocations, the normalisation constants
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        out = augment(images, generator, draws)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert out.shape == (64, 3, 64, 64)
