"""The training input path (rsbkit.core.data.TrainInput): what the loader hands over for each kind of data,
the device half's statistics against timm's per-image transform, per-sample seeds that make an epoch
independent of what ran before it (persistent workers, resume), and decoding with a corrupt file."""
from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from clock import limit
from PIL import Image

from rsbkit.core.augment import DeviceAugment, Policy, decode_images, draw
from rsbkit.core.data import Data, TrainInput, input_kind, load_data, sample_seed
from rsbkit.core.errors import DataError, RecipeError
from rsbkit.core.recipes import A3, plan_batch, smoke

pytestmark = pytest.mark.cost(15)  # seconds in the suite on 2 cores: files start costliest first (conftest)


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

    from rsbkit.core.augment import FILL, apply_op

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
    from rsbkit.core.train import train

    (image_folder / "train" / "class0" / "broken.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")
    recipe = smoke_recipe.replace(batch_size=8, augment_on="device", decode_on="device", eval_on="device")
    result = train(recipe, image_folder, tmp_path / "run", workers=0, progress="none", log=lambda s: None)
    assert result["status"] == "completed" and result["resolved"]["input"] == "encoded"
    assert result["final_top1"] is not None  # evaluated through EvalInput
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
    from rsbkit.core.train import resolve_augment_on

    with pytest.raises(RecipeError, match="train_interpolation 'nearest' has no device RandAugment"):
        A3.replace(augment_on="device", train_interpolation="nearest")  # timm's loader path takes it
    assert resolve_augment_on(A3.replace(color_jitter=0.4), torch.device("cpu")) == "loader"  # auto falls back
    assert resolve_augment_on(A3.replace(train_interpolation="nearest"), torch.device("cpu")) == "loader"
    assert resolve_augment_on(A3.replace(train_interpolation="nearest", aa=None), torch.device("cpu")) == "device"
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


# ---------------------------------------------------------------- what would crash or starve a GPU (issue 20)


def _count_copies(monkeypatch):
    """Every small tensor the augmentation sends to its device goes through augment._to_device: count them."""
    import rsbkit.core.augment as augment

    calls = []
    real = augment._to_device

    def counting(t, device):
        calls.append(tuple(t.shape))
        return real(t, device)

    monkeypatch.setattr(augment, "_to_device", counting)
    return calls


def test_augmentation_sends_a_fixed_number_of_small_tensors_per_batch(monkeypatch, embedded):
    """RandAugment's op indices and arguments go to the device once per batch, not once per (layer, op); the fill
    colour of the affine ops is made once, not per op call (a blocking copy each on CUDA)."""
    from torch.overrides import TorchFunctionMode

    made = []

    class TensorsFromPythonData(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            if func in (torch.tensor, torch.as_tensor) and kwargs.get("device") is not None:
                made.append(func.__name__)  # a tensor built from Python data on the images' device: a blocking copy
            return func(*args, **kwargs)

    recipe = A3.replace(train_res=32, aa="rand-m9-mstd0.5-inc1", reprob=0.25)
    augment = DeviceAugment(recipe)
    images = torch.from_numpy(np.repeat(embedded.train.images[:64, None], 3, axis=1))
    generator = torch.Generator().manual_seed(0)
    augment(images, generator)  # first call: the constants
    calls = _count_copies(monkeypatch)
    with TensorsFromPythonData():
        augment(images, generator)
    assert made == []
    ops = augment.randaugment.schedule(augment.randaugment.draw(64, "cpu", torch.Generator().manual_seed(1)))[0]
    assert len(ops) > 8  # many (layer, op) pairs run per batch ...
    assert len(calls) <= 3, calls  # ... with the op indices, the arguments and the erasing boxes sent once each


def test_one_large_photo_does_not_pad_the_batch():
    """ImageNet holds photos of 4000x3000: cropping a list of decoded images asks for memory by each box, not
    for the batch padded to its largest image (16 x 36 M floats here, 46 GB at batch 256)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Largest(TorchDispatchMode):
        numel = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            for t in out if isinstance(out, (tuple, list)) else [out]:
                if isinstance(t, torch.Tensor):
                    Largest.numel = max(Largest.numel, t.numel())
            return out

    big = torch.randint(0, 256, (3, 3000, 4000), dtype=torch.uint8)
    images = [big] + [torch.randint(0, 256, (3, 375, 500), dtype=torch.uint8) for _ in range(15)]
    recipe = A3.replace(train_res=64, aa="rand-m9-mstd0.5-inc1", reprob=0.25)
    with Largest():
        out = DeviceAugment(recipe)(images, torch.Generator().manual_seed(0))
    assert out.shape == (16, 3, 64, 64)
    assert Largest.numel <= big.numel() * 1.01  # at most the large photo's box (with its margin) as floats


def _encoded(images_and_formats):
    out = []
    for img, fmt, options in images_and_formats:
        buf = io.BytesIO()
        img.save(buf, format=fmt, **options)
        out.append(torch.frombuffer(bytearray(buf.getvalue()), dtype=torch.uint8))
    return out


def test_encoded_batches_of_any_format_decode(photo_batch):
    """A batch without a JPEG (decode_jpeg([]) raises) and a batch of JPEG, PNG, CMYK, progressive and grey files."""
    imgs = photo_batch[0]
    pngs = _encoded([(im, "PNG", {}) for im in imgs[:3]])
    decoded, bad = decode_images(pngs, torch.device("cpu"))
    assert bad == [] and [tuple(d.shape) for d in decoded] == [(3, 96, 96)] * 3
    assert all(torch.equal(d, torch.from_numpy(np.asarray(im)).permute(2, 0, 1)) for d, im in zip(decoded, imgs))  # lossless
    mixed = [(imgs[0], "JPEG", dict(quality=90)), (imgs[1], "PNG", {}), (imgs[2].convert("CMYK"), "JPEG", dict(quality=90)),
             (imgs[3], "JPEG", dict(quality=90, progressive=True)), (imgs[0].convert("L"), "JPEG", dict(quality=90))]
    encoded = _encoded(mixed)
    decoded, bad = decode_images(encoded, torch.device("cpu"))
    assert bad == [] and len(decoded) == 5 and all(d.shape == (3, 96, 96) and d.dtype == torch.uint8 for d in decoded)
    for d, e in zip(decoded, encoded):
        pil = torch.from_numpy(np.asarray(Image.open(io.BytesIO(e.numpy().tobytes())).convert("RGB"))).permute(2, 0, 1)
        assert (d.float() - pil.float()).abs().mean() < 2.5  # libjpeg's and PIL's decoders, up to rounding


def test_a_folder_of_pngs_trains_on_the_encoded_path(tmp_path, embedded):
    """Every batch of a PNG folder decodes; on CUDA, auto decodes a folder of PNGs in the loader, a folder of JPEGs on the GPU."""
    for split, n in (("train", 32), ("val", 8)):
        for i in range(n):
            (tmp_path / "pngs" / split / f"c{i % 2}").mkdir(parents=True, exist_ok=True)
            embedded.train[i][0].save(tmp_path / "pngs" / split / f"c{i % 2}" / f"{i}.png")
    data = load_data(tmp_path / "pngs")
    recipe = smoke(A3, batch_size=8)
    cuda = torch.device("cuda")
    assert input_kind(data, recipe, "device", "auto", cuda) == "crops"
    source = TrainInput(data, recipe, plan_batch(recipe), augment_on="device", decode_on="device")
    assert source.kind == "encoded"
    batches = _epoch(source, 0)
    assert len(batches) == 4 and all(images.shape == (8, 3, recipe.train_res, recipe.train_res) for images, _ in batches)


def test_a_subset_keeps_the_encoded_path(image_folder):
    """--limit-train (a Subset of the folder) decodes on the device as the whole folder does, the same files in its order."""
    recipe = smoke(A3, batch_size=8)
    data = load_data(image_folder, limit_train=40)
    assert input_kind(data, recipe, "device", "auto", torch.device("cuda")) == "encoded"
    source = TrainInput(data, recipe, plan_batch(recipe), augment_on="device", decode_on="device")
    assert source.kind == "encoded"
    sub = data.train
    assert [p for p, _ in source.loader.dataset.base.samples] == [sub.dataset.samples[i][0] for i in sub.indices]
    assert len(_epoch(source, 0)) == 5


def test_many_files_per_batch_fit_a_small_descriptor_limit(tmp_path, embedded):
    """Each tensor a worker sends is a shared-memory file descriptor: one per file made 2 workers x 4 prefetched
    batches of 128 files fail or hang under a limit of 256 open files; one buffer per batch does not. Run in a child
    process (the limit is per process), bounded by a timeout."""
    import subprocess
    import sys
    import textwrap

    for i in range(1024):
        folder = tmp_path / "many" / ("train" if i < 1000 else "val") / f"c{i % 2}"
        folder.mkdir(parents=True, exist_ok=True)
        embedded.train[i % 500][0].resize((8, 8)).convert("RGB").save(folder / f"{i}.jpg", quality=80)
    script = textwrap.dedent(f"""
        import resource, torch
        from rsbkit.core.data import TrainInput, load_data
        from rsbkit.core.recipes import A3, plan_batch, smoke
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
        recipe = smoke(A3, batch_size=128).replace(train_res=8, test_res=8)
        source = TrainInput(load_data({str(tmp_path / "many")!r}), recipe, plan_batch(recipe), augment_on="device",
                            decode_on="device", workers=2, prefetch=4)
        n = sum(len(images) for images, _, _ in source.epoch(0, torch.Generator().manual_seed(0)))
        print("images", n)
    """)
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=limit(120))
    assert res.returncode == 0, res.stderr[-2000:]
    assert "images 896" in res.stdout  # 7 whole batches of 128


def test_out_of_memory_while_decoding_reaches_the_fallback(tmp_path, image_folder, smoke_recipe, monkeypatch):
    """An out-of-memory error inside decoding is not an unreadable file: it halves the micro-batch like one in the step."""
    import torchvision.io

    import rsbkit.core.augment as augment
    from rsbkit.core.train import train

    real = torchvision.io.decode_jpeg
    calls = []

    def tight(data, *args, **kwargs):
        calls.append(len(data) if isinstance(data, list) else 1)
        if isinstance(data, list) and len(data) > 4:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (injected)")
        return real(data, *args, **kwargs)

    monkeypatch.setattr(augment, "decode_jpeg", tight)  # the name rsbkit decodes with
    with pytest.raises(torch.OutOfMemoryError):
        decode_images(_encoded([(Image.new("RGB", (8, 8)), "JPEG", {})] * 5), torch.device("cpu"))
    lines = []
    recipe = smoke_recipe.replace(batch_size=8, augment_on="device", decode_on="device")
    result = train(recipe, image_folder, tmp_path / "run", device="cpu", workers=0, progress="none", log=lines.append)
    assert result["status"] == "completed" and result["skipped_files"] == []
    assert result["resolved"]["micro_batch"] == 4 and any("out of memory at 8 images" in line for line in lines)


def test_sample_seeds_for_a_whole_epoch_match_one_at_a_time():
    """The vectorised seeds are the scalar ones (splitmix64 in wrapping uint64), for the RandAugment stream's negative positions too."""
    from rsbkit.core.data import sample_seeds

    positions = np.arange(-4, 3000)
    for epoch_seed in (0, 7, 2**32 - 1):
        assert sample_seeds(epoch_seed, positions).tolist() == [sample_seed(epoch_seed, int(p)) for p in positions]


def test_batches_are_made_ahead_in_a_thread():
    """rsbkit.core.data.ahead: batch i + 1 is made while the caller works on batch i (sleeps stand for nvJPEG blocking the
    thread and for the step); the order is kept; an error in the thread is raised at its batch; closing early stops it."""
    import threading
    import time

    from rsbkit.core.data import ahead

    def make(n, fail_at=None):
        for i in range(n):
            time.sleep(0.05)
            if i == fail_at:
                raise torch.OutOfMemoryError("injected")
            yield torch.full((2,), i), torch.tensor([i]), []

    t0 = time.perf_counter()
    seen = []
    for _images, labels, _ in ahead(make(8), torch.device("cpu")):
        time.sleep(0.05)
        seen.append(int(labels))
    assert seen == list(range(8)) and time.perf_counter() - t0 < 0.65  # overlapped: 8 x 50 ms + one, not 8 x 100 ms
    got = []
    with pytest.raises(torch.OutOfMemoryError, match="injected"):
        for _, labels, _ in ahead(make(5, fail_at=3), torch.device("cpu")):
            got.append(int(labels))
    assert got == [0, 1, 2]
    batches = ahead(make(100), torch.device("cpu"))
    next(batches)
    batches.close()
    assert not any(t.name == "rsbkit-input" for t in threading.enumerate())


needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@needs_cuda
def test_batches_made_ahead_are_ordered_after_the_threads_stream():
    """The thread's stream is slow (a sleep kernel before each batch is filled); the caller's stream must still see the
    filled values: it waits for the thread's event, not for the CPU."""
    from rsbkit.core.data import ahead

    cuda = torch.device("cuda")

    def make():
        for i in range(4):
            x = torch.zeros(1 << 20, device=cuda)
            torch.cuda._sleep(20_000_000)  # tens of ms of GPU time on the thread's stream
            x.fill_(i + 1)
            yield x, torch.full((1,), i, device=cuda), []

    sums = [images.sum() for images, _, _ in ahead(make(), cuda)]  # queued on the caller's stream
    assert [int(s.item()) for s in sums] == [(i + 1) << 20 for i in range(4)]


def _noise_jpegs(seed: int, n: int = 8) -> list:
    """`n` JPEGs of random noise, 96 x 64: two seeds give files of other bytes whose decoded images have the same sizes."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (64, 96, 3), dtype=np.uint8)).save(buf, format="JPEG", quality=90)
        out.append(torch.frombuffer(bytearray(buf.getvalue()), dtype=torch.uint8))
    return out


@needs_cuda
def test_decoding_on_cuda_does_not_overwrite_images_that_queued_work_reads(monkeypatch):
    """pytorch/vision#9606: nvJPEG writes its outputs without waiting for the stream they were allocated on. Decoded
    images read by a slow kernel queued on the input stream, then freed; the next decode (other files, the same sizes)
    must not take their blocks while that kernel waits, or it reads the next batch's pixels. The same sizes on a fresh
    stream make the allocator's choice certain: the control, with decode_images' record_stream made a no-op, shows
    the next decode does take the freed blocks, so this test fails without the guard (the old one could pass without
    it: the block it freed was one the decoder was unlikely to be handed)."""
    cuda = torch.device("cuda")
    first, second = _noise_jpegs(0), _noise_jpegs(1)

    def trial():
        with torch.cuda.stream(torch.cuda.Stream(cuda)):  # a fresh input stream, with a fresh decode stream
            want = sum(int(im.sum(dtype=torch.int64)) for im in decode_images(first, cuda)[0])
            images = decode_images(first, cuda)[0]
            blocks = {im.data_ptr() for im in images}
            torch.cuda._sleep(100_000_000)  # tens of ms of GPU time on the input stream before the sum reads
            total = torch.stack([im.sum(dtype=torch.int64) for im in images]).sum()
            del images
            taken = blocks & {im.data_ptr() for im in decode_images(second, cuda)[0]}
            return want, int(total.item()), taken

    want, total, taken = trial()
    assert not taken and total == want
    monkeypatch.setattr(torch.Tensor, "record_stream", lambda self, stream: None)
    assert trial()[2], "the control: without record_stream the next decode takes the freed blocks at once"


@needs_cuda
def test_an_epoch_on_the_encoded_path_runs_on_cuda(image_folder):
    """The encoded path on CUDA through TrainInput: nvJPEG in the input thread, on its stream, every batch on the GPU
    (the GPU check's census counts the training thread's syncs of a whole training epoch)."""
    recipe = smoke(A3, batch_size=8)
    source = TrainInput(load_data(image_folder), recipe, plan_batch(recipe), augment_on="device", decode_on="device",
                        device="cuda", pin_memory=True)
    generator = torch.Generator("cuda").manual_seed(0)
    batches = list(source.epoch(0, generator))
    assert len(batches) == 9 and all(b[0].device.type == "cuda" for b in batches)


@pytest.mark.parametrize("interpolation", ["bicubic", "bilinear"])
def test_evaluation_on_the_device_matches_timms_eval_transform(tmp_path, photo_batch, interpolation):
    """eval_on: device (decode_images, torchvision's antialiased tensor resize, centre crop) gives timm's eval
    transform's sizes and its pixels within a grey level or two (here both decode with libjpeg; nvJPEG's IDCT adds its
    own rounding), and the same predictions."""
    from rsbkit.core.data import EvalInput, eval_loader, eval_transform
    from rsbkit.core.evaluate import evaluate_models
    from rsbkit.core.models import create_model

    for split in ("train", "val"):
        for i, im in enumerate(photo_batch[0]):
            (tmp_path / split / f"c{i % 2}").mkdir(parents=True, exist_ok=True)
            im.resize((96 + 16 * i, 72 + 8 * i)).save(tmp_path / split / f"c{i % 2}" / f"{i}.jpg", quality=90)
    data = load_data(tmp_path)
    device_input = EvalInput(data.val, 64, 0.875, interpolation, device="cpu", batch_size=8, workers=0)
    pil_input = eval_loader(data.val, eval_transform(64, 0.875, interpolation), batch_size=8, workers=0)
    (ours, ours_labels, _), (theirs, their_labels, _) = list(device_input)[0], list(pil_input)[0]
    assert ours.shape == theirs.shape == (len(data.val), 3, 64, 64) and torch.equal(ours_labels, their_labels)
    grey_levels = (ours - theirs).abs() * torch.tensor((0.229, 0.224, 0.225)).view(1, 3, 1, 1) * 255
    assert grey_levels.mean() < 0.05 and grey_levels.max() <= 2.01
    torch.manual_seed(0)
    model = create_model(smoke(A3), 2)
    a = evaluate_models({"m": model}, device_input, torch.device("cpu"))["m"]
    b = evaluate_models({"m": model}, pil_input, torch.device("cpu"))["m"]
    assert a["top1"] == b["top1"] and a["loss"] == pytest.approx(b["loss"], abs=1e-3)
    with pytest.raises(DataError, match="eval_on: device needs a folder"):
        EvalInput(load_data("default").val, 32, 1.0, "bicubic", device="cpu", batch_size=8, workers=0)
