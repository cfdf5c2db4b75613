"""Faults of the input path that a CPU run can show (the CUDA-only ones skip without CUDA; the GPU check runs them):
the input thread after an error, one side stream per input, nvJPEG's allocator failure, an unreadable micro-batch,
numpy's global RNG shared by the input thread and Mixup, Subsets of Subsets, files the batched decode cannot take,
and what the device path says when it fails."""
from __future__ import annotations

import contextlib
import io
import threading

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import Subset

import rsbkit.core.augment as augment
import rsbkit.core.data.train_input as train_input
import rsbkit.core.train as train_module
from rsbkit.core.augment import decode_images, jpeg_components
from rsbkit.core.data import (
    EncodedFiles,
    ImageFiles,
    InputPathError,
    SkippedImage,
    TrainInput,
    collate_encoded,
    decode_batch,
    eval_kind,
    files_of,
    in_flight_note,
    load_data,
)
from rsbkit.core.devices import is_out_of_memory, nvjpeg_status
from rsbkit.core.recipes import A3, plan_batch, smoke
from rsbkit.core.train import train

pytestmark = pytest.mark.cost(12)  # seconds in the suite on 2 cores: files start costliest first (conftest)
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def _input_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "rsbkit-input" and t.is_alive()]


def _threaded_input(monkeypatch):
    """train() with its input made ahead in a thread, as on CUDA, on this CPU."""
    real = train_module.make_input

    def make(spec):
        source = real(spec)
        source.threaded = True
        return source

    monkeypatch.setattr(train_module, "make_input", make)


def _fail_at_micro_step(monkeypatch, n: int):
    real, calls = train_module.micro_step, []

    def micro_step(*args, **kwargs):
        calls.append(1)
        if len(calls) == n:
            raise RuntimeError("injected error in the training step")
        return real(*args, **kwargs)

    monkeypatch.setattr(train_module, "micro_step", micro_step)


def test_no_input_thread_outlives_an_error_in_the_training_loop(tmp_path, smoke_recipe, monkeypatch):
    """The error's traceback is kept (as a notebook keeps sys.last_traceback, or pytest here), which holds the epoch's
    frame: the input thread must be stopped by the loop itself, not by garbage collection."""
    _threaded_input(monkeypatch)
    _fail_at_micro_step(monkeypatch, 2)
    with pytest.raises(RuntimeError, match="injected error") as kept:
        train(smoke_recipe, "default", tmp_path / "run", device="cpu", workers=0, limit_train=128, limit_val=32,
              progress="none", log=lambda s: None)
    assert kept.traceback  # still referenced while we look
    assert _input_threads() == []


@needs_cuda
def test_no_input_thread_outlives_an_error_on_cuda(tmp_path, image_folder, smoke_recipe, monkeypatch):
    _fail_at_micro_step(monkeypatch, 2)
    with pytest.raises(RuntimeError, match="injected error") as kept:
        train(smoke_recipe.replace(batch_size=8), image_folder, tmp_path / "run", device="cuda", workers=1,
              progress="none", log=lambda s: None)
    assert kept.traceback and _input_threads() == []


def test_one_side_stream_per_input_for_the_whole_run(embedded, monkeypatch):
    """Every epoch's thread runs on the stream the input object made once (a new stream per epoch strands the last
    one's cached blocks in the caching allocator, and torch's pool of 32 streams wraps onto NCCL's or nvJPEG's)."""
    made, used = [], []
    monkeypatch.setattr(train_input, "side_stream", lambda device: made.append(object()) or made[-1])
    real_ahead = train_input.ahead

    def ahead(batches, device, depth=2, stream=None):
        used.append(stream)
        return real_ahead(batches, device, depth, stream=stream)

    monkeypatch.setattr(train_input, "ahead", ahead)
    recipe = smoke(A3, batch_size=16)
    source = TrainInput(embedded, recipe, plan_batch(recipe), augment_on="device", threaded=True)
    for epoch in range(3):
        for i, _ in enumerate(source.epoch(epoch, torch.Generator().manual_seed(epoch))):
            if i == 2:
                break
    assert len(made) == 1 and used == made * 3


@needs_cuda
def test_one_cuda_stream_per_input_over_epochs_and_evaluations(tmp_path, image_folder, smoke_recipe, monkeypatch):
    """Counted where the inputs make their streams (side_stream), as the CPU test above does: torch.cuda.Stream itself
    cannot be counted, since torch.cuda.current_stream() and torch.cuda.stream() build values of that class too."""
    import rsbkit.core.data.eval_input as eval_input

    made = []
    real = train_input.side_stream

    def counted(device):
        made.append(device)
        return real(device)

    monkeypatch.setattr(train_input, "side_stream", counted)
    monkeypatch.setattr(eval_input, "side_stream", counted)
    recipe = smoke_recipe.replace(batch_size=8, epochs=3, eval_on="device")
    result = train(recipe, image_folder, tmp_path / "run", device="cuda", workers=1, progress="none", log=lambda s: None)
    assert result["status"] == "completed" and len(made) == 2  # the training input's and the evaluation input's


# torchvision's own messages (torchvision/csrc/io/image/cuda/decode_jpegs_cuda.cpp, 0.26): each nvJPEG call is checked
# with "Failed to <what>: <status>", and decode_jpegs_cuda raises what the decode threw again inside "Error while
# decoding JPEG images: ". With TORCH_CHECK the inner message is followed by where it was raised; with STD_TORCH_CHECK
# (torch's header-only check, in other revisions of the same file) preceded by the function, file and line.
_TORCHVISION = "Error while decoding JPEG images: Failed to {what}: {status}\nException raised from decode_images at " \
               "torchvision/csrc/io/image/cuda/decode_jpegs_cuda.cpp:475 (most recent call first):"
_TORCHVISION_STD = "decode_jpegs_cuda, torchvision/csrc/io/image/cuda/decode_jpegs_cuda.cpp:140, Error while decoding " \
                   "JPEG images: decode_images, torchvision/csrc/io/image/cuda/decode_jpegs_cuda.cpp:475, Failed to {what}: {status}"


def test_nvjpegs_allocator_failure_is_an_out_of_memory_error(monkeypatch):
    """torchvision reports nvJPEG's status as a number: 5 is NVJPEG_STATUS_ALLOCATOR_FAILURE. It must reach the
    out-of-memory fallback, not send the batch through single decodes on the CPU; a file nvJPEG cannot read (2:
    NVJPEG_STATUS_INVALID_PARAMETER, 3: NVJPEG_STATUS_BAD_JPEG) is still a bad file."""
    for shape in (_TORCHVISION, _TORCHVISION_STD):
        for what in ("decode batch", "initialize batch decoding", "decode jpeg stream"):
            assert nvjpeg_status(shape.format(what=what, status=5)) == 5
            assert is_out_of_memory(RuntimeError(shape.format(what=what, status=5))), (shape, what)
            assert not is_out_of_memory(RuntimeError(shape.format(what=what, status=2)))
        assert not is_out_of_memory(RuntimeError(shape.format(what="get image info", status=3)))
        assert not is_out_of_memory(RuntimeError(shape.format(what="decode batch", status=50)))
        assert not is_out_of_memory(RuntimeError(shape.format(what="synchronize CUDA stream", status=5)))  # a CUDA error
    assert is_out_of_memory(RuntimeError("nvjpegDecode failed: 5"))  # torchvision's other versions
    assert not is_out_of_memory(RuntimeError("Error while decoding JPEG images: Unknown chroma subsampling"))
    assert is_out_of_memory(torch.OutOfMemoryError("CUDA out of memory"))

    def full(*args, **kwargs):
        raise RuntimeError(_TORCHVISION.format(what="decode batch", status=5))

    monkeypatch.setattr(augment, "decode_jpeg", full)
    with pytest.raises(RuntimeError, match="Failed to decode batch: 5"):
        decode_images(_encoded([Image.new("RGB", (8, 8))] * 4), torch.device("cpu"))


def _encoded(images, fmt="JPEG", **options):
    out = []
    for img in images:
        buf = io.BytesIO()
        img.save(buf, format=fmt, **options)
        out.append(torch.frombuffer(bytearray(buf.getvalue()), dtype=torch.uint8))
    return out


def _count_constant_copies(monkeypatch):
    """Tensor.to, recording every copy of a CPU tensor to the meta device (a stand-in for a GPU: a device of its own
    that a CPU has) as (shape, non_blocking), slowly: the other input threads arrive while it runs."""
    import time

    copies, real = [], torch.Tensor.to

    def to(self, *args, **kwargs):
        out = real(self, *args, **kwargs)
        if self.device.type == "cpu" and out.device.type == "meta":
            time.sleep(0.05)
            copies.append((tuple(self.shape), bool(kwargs.get("non_blocking", False))))
        return out

    monkeypatch.setattr(torch.Tensor, "to", to)
    monkeypatch.setattr(augment, "_CONSTANTS", {})
    return copies


def test_the_augmentations_constants_are_copied_once_and_waited_for(monkeypatch):
    """With several input threads, each on its stream, the first to need the mean, std or fill colour used to copy it
    without waiting (non_blocking, on its stream) and keep it; another thread's stream could read it before the copy
    landed, and threads arriving together each copied it. Now: one copy each, blocking, under a lock; and the input
    makes them when it is made (DeviceAugment.to), so its threads copy nothing."""
    from rsbkit.core.augment import FILL, DeviceAugment, Normalise

    meta = torch.device("meta")
    copies = _count_constant_copies(monkeypatch)
    got = []

    def input_thread():
        normalised = Normalise()(torch.empty(2, 3, 4, 4, device=meta))
        got.append((normalised.device.type, augment._fill_tensor(FILL, meta, torch.float32)))

    threads = [threading.Thread(target=input_thread) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(got) == 4 and all(g[1] is got[0][1] and g[0] == "meta" for g in got)
    assert sorted(copies) == [((1, 3, 1, 1), False)] * 3  # mean, std, fill: once each, waited for

    del copies[:]
    monkeypatch.setattr(augment, "_CONSTANTS", {})
    recipe = smoke(A3, batch_size=16)
    device_augment = DeviceAugment(recipe).to(meta)  # what TrainInput does when it is made
    assert recipe.aa and sorted(copies) == [((1, 3, 1, 1), False)] * 3
    threads = [threading.Thread(target=device_augment.normalise, args=(torch.empty(2, 3, 4, 4, device=meta),))
               for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(copies) == 3  # none by the threads


def test_a_batch_with_a_file_the_batched_decode_refuses_is_halved_not_decoded_one_by_one(monkeypatch):
    """One file in 64 that the batched decode refuses (a stand-in for what nvJPEG cannot read) costs about 2 log2(64)
    calls, not 64, and the file is still decoded (by libjpeg on the CPU)."""
    images = [Image.new("RGB", (8, 8), (4 * i, 0, 0)) for i in range(64)]
    encoded = _encoded(images)
    refused = encoded[37]
    real, calls = augment.decode_jpeg, []

    def picky(data, *args, **kwargs):
        calls.append(len(data))
        if any(d is refused for d in data):
            raise RuntimeError(_TORCHVISION.format(what="get image info", status=3))  # NVJPEG_STATUS_BAD_JPEG
        return real(data, *args, **kwargs)

    monkeypatch.setattr(augment, "decode_jpeg", picky)
    decoded, bad = decode_images(encoded, torch.device("cpu"))
    assert bad == [] and len(decoded) == 64
    assert [int(d[0, 0, 0]) // 4 for d in decoded] == list(range(64))  # in order (JPEG rounds a level or two)
    assert len(calls) <= 2 * 6 + 1


class _FakeStream:
    def __init__(self, name: str, log: list):
        self.name, self.log, self.cuda_stream = name, log, id(self)

    def synchronize(self):
        self.log.append(("synchronize", self.name))

    def wait_stream(self, other):
        self.log.append(("wait_stream", self.name, other.name))


def _fake_cuda(monkeypatch):
    """torch.cuda's streams, stream contexts, syncs and record_stream, and torchvision's decode_jpeg, replaced by fakes
    that log what decode_images does with them, in order: what a CUDA run would do, on this CPU."""
    log, made = [], []
    current = [_FakeStream("input", log)]

    def stream_class(device=None):
        made.append(_FakeStream(f"decode{len(made)}", log))
        return made[-1]

    @contextlib.contextmanager
    def stream(s):
        current.append(s)
        try:
            yield
        finally:
            current.pop()

    def decode_jpeg(data, mode=None, device=None):
        log.append(("decode", current[-1].name, len(data)))
        return [torch.zeros(3, 8, 8, dtype=torch.uint8) for _ in data]

    monkeypatch.setattr(torch.cuda, "current_stream", lambda device=None: current[-1])
    monkeypatch.setattr(torch.cuda, "Stream", stream_class)
    monkeypatch.setattr(torch.cuda, "stream", stream)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: log.append(("synchronize", "device")))
    monkeypatch.setattr(torch.Tensor, "record_stream", lambda self, s: log.append(("record_stream", s.name, id(self))))
    monkeypatch.setattr(augment, "decode_jpeg", decode_jpeg)
    monkeypatch.setattr(augment, "_DECODE_STREAMS", {})
    return log, made


def test_jpegs_are_decoded_on_a_stream_of_their_own_that_the_input_stream_waits_for(monkeypatch):
    """pytorch/vision#9606: nvJPEG writes outputs allocated on the current stream without waiting for it. The input
    thread used to wait on the host for its whole stream before each decode (batch i's augmentation); now the decode
    runs on a stream of its own (made once), the input stream waits for it on the GPU, and every output is
    record_stream-ed on the input stream, so its block is not the next decode's output while a queued kernel reads it.
    (A GPU shows the same on real memory: tests/core/test_input.py.)"""
    log, made = _fake_cuda(monkeypatch)
    cuda = torch.device("cuda")
    encoded = _encoded([Image.new("RGB", (8, 8))] * 4)
    for _ in range(2):
        del log[:]
        images, bad = decode_images(encoded, cuda)
        assert bad == [] and len(images) == 4
        recorded = {entry[2] for entry in log if entry[:2] == ("record_stream", "input")}
        assert log[:2] == [("decode", "decode0", 4), ("wait_stream", "input", "decode0")], log
        assert recorded == {id(im) for im in images} and len(log) == 2 + 4  # no host sync of any stream
    assert len(made) == 1  # one decode stream per input stream, for the process's life


def test_the_input_thread_does_not_read_the_jpeg_headers_again(monkeypatch):
    """EncodedFiles reads each JPEG's frame header in the loader worker (nvJPEG's batch refuses CMYK); the files of an
    EncodedBatch are those it passed, and decode_batch says so, so the input thread does not walk the headers again."""
    log, _ = _fake_cuda(monkeypatch)
    walked = []
    real = augment.jpeg_components
    monkeypatch.setattr(augment, "jpeg_components", lambda data: walked.append(1) or real(data))
    files = _encoded([Image.new("RGB", (8, 8), (10 * i, 0, 0)) for i in range(4)])
    batch = collate_encoded([(f.numpy(), i, f"{i}.jpg") for i, f in enumerate(files)])
    images, labels, skipped = decode_batch(batch, torch.device("cuda"))
    assert len(images) == 4 and labels.tolist() == [0, 1, 2, 3] and skipped == []
    assert walked == [] and ("decode", "decode0", 4) in log


def test_jpeg_components_are_read_from_the_frame_header():
    rgb, grey, cmyk = (_encoded([Image.new(mode, (8, 8))])[0].numpy() for mode in ("RGB", "L", "CMYK"))
    progressive = _encoded([Image.new("RGB", (8, 8))], progressive=True)[0].numpy()
    png = _encoded([Image.new("RGB", (8, 8))], fmt="PNG")[0].numpy()
    assert [jpeg_components(x) for x in (rgb, grey, cmyk, progressive, png)] == [3, 1, 4, 3, None]
    assert jpeg_components(rgb[:20]) is None  # cut before the frame header


def test_files_the_batched_decode_cannot_take_are_decoded_in_the_workers(tmp_path, embedded):
    """BMP, TIFF, PPM (IMAGE_EXTENSIONS lists them and the loader path reads them; the encoded path used to skip them as
    unreadable), PNG and a CMYK JPEG are decoded with PIL in the loader worker; plain JPEGs travel as bytes."""
    folder = tmp_path / "mixed"
    kinds = [("a.jpg", "RGB", "JPEG"), ("b.bmp", "RGB", "BMP"), ("c.tiff", "RGB", "TIFF"), ("d.ppm", "RGB", "PPM"),
             ("e.png", "RGB", "PNG"), ("f.jpg", "CMYK", "JPEG"), ("g.jpg", "L", "JPEG"), ("h.jpg", "RGB", "JPEG")]
    for split in ("train", "val"):
        for c in range(2):
            (folder / split / f"c{c}").mkdir(parents=True)
            for i, (name, mode, fmt) in enumerate(kinds):
                embedded.train[i][0].convert(mode).save(folder / split / f"c{c}" / name, format=fmt)
    data = load_data(folder)
    encoded = EncodedFiles(files_of(data.train))
    travel = {n.rsplit("/", 1)[-1]: type(encoded[i][0]).__name__ for i, (n, _) in enumerate(data.train.samples[:8])}
    assert travel == {"a.jpg": "ndarray", "b.bmp": "Decoded", "c.tiff": "Decoded", "d.ppm": "Decoded", "e.png": "Decoded",
                      "f.jpg": "Decoded", "g.jpg": "ndarray", "h.jpg": "ndarray"}
    recipe = smoke(A3, batch_size=8)
    source = TrainInput(data, recipe, plan_batch(recipe), augment_on="device", decode_on="device", workers=1)
    seen, skipped = 0, []
    for images, labels, skipped_batch in source.epoch(0, torch.Generator().manual_seed(0)):
        seen += len(labels)
        skipped += skipped_batch
        assert images.shape == (8, 3, recipe.train_res, recipe.train_res)
    assert skipped == [] and seen == 16


def test_an_unreadable_micro_batch_still_steps(tmp_path, smoke_recipe, monkeypatch):
    """A step whose micro-batch had no readable image still runs its optimizer step (one process: the gradients
    used to carry into the next step, and the run made one step fewer; under DDP that rank skipped the syncing
    backward the others waited for: tests/core/test_distributed.py's two-process probe)."""
    real = TrainInput._prepare
    calls = []

    def prepare(self, batch, generator, draws):
        calls.append(1)
        if len(calls) == 3:
            return None, None, [SkippedImage("injected.jpg", "every image of the micro-batch unreadable")]
        return real(self, batch, generator, draws)

    monkeypatch.setattr(TrainInput, "_prepare", prepare)
    result = train(smoke_recipe.replace(epochs=1), "default", tmp_path / "run", device="cpu", workers=0, limit_train=128,
                   limit_val=32, progress="none", log=lambda s: None)
    steps = result["resolved"]["steps_per_epoch"]
    assert steps == 8 and result["status"] == "completed"
    metrics = (tmp_path / "run" / "metrics.csv").read_text().splitlines()
    assert metrics[-1].split(",")[1] == str(steps)  # every step ran, the empty one included
    assert result["skipped_files"] == [dict(path="injected.jpg", reason="every image of the micro-batch unreadable")]


def test_a_micro_batch_with_one_readable_image_and_mixup_still_steps(tmp_path, smoke_recipe, monkeypatch):
    """timm's Mixup pairs images by flipping the batch, so an odd micro-batch loses its last image; with one readable
    image that left none, whose mean loss is NaN, and NonFiniteLossError stopped the run. It is the blank step."""
    real = TrainInput._prepare
    calls = []

    def prepare(self, batch, generator, draws):
        calls.append(1)
        images, labels, skipped = real(self, batch, generator, draws)
        if len(calls) == 3:
            return images[:1], labels[:1], skipped + [SkippedImage("injected.jpg", "all but one image unreadable")]
        return images, labels, skipped

    monkeypatch.setattr(TrainInput, "_prepare", prepare)
    recipe = smoke_recipe.replace(epochs=1)
    assert recipe.mixup > 0 and recipe.cutmix > 0
    result = train(recipe, "default", tmp_path / "run", device="cpu", workers=0, limit_train=128, limit_val=32,
                   progress="none", log=lambda s: None)
    assert result["status"] == "completed" and len(calls) >= 8
    metrics = (tmp_path / "run" / "metrics.csv").read_text().splitlines()
    header, last = metrics[0].split(","), dict(zip(metrics[0].split(","), metrics[-1].split(",")))
    assert last["step"] == "8" and np.isfinite(float(last["train_loss"])), header


def test_mixup_draws_are_not_taken_by_the_input_threads_seeding():
    """workers=0 on CUDA: the input thread seeds numpy's global RNG for a sample's transform while the training thread
    draws Mixup's lambda from it. The draw must wait: taken inside the seeded window it would be the sample's
    number, and its advance lost when the state is put back."""
    from timm.data import Mixup

    from rsbkit.core.data.train_input import _Seeded, mix

    mixup = Mixup(mixup_alpha=0.2, cutmix_alpha=1.0, num_classes=10)
    x, y = torch.rand(4, 3, 8, 8), torch.arange(4)
    np.random.seed(0)
    expected = [mix(mixup, x.clone(), y)[0] for _ in range(2)]

    inside, done = threading.Event(), threading.Event()

    def transform_in_the_input_thread():
        with _Seeded(123):
            inside.set()
            done.wait(0.5)  # a slow transform; with the lock the training thread waits this out

    np.random.seed(0)
    thread = threading.Thread(target=transform_in_the_input_thread)
    thread.start()
    inside.wait()
    first = mix(mixup, x.clone(), y)[0]
    done.set()
    thread.join()
    second = mix(mixup, x.clone(), y)[0]
    assert torch.equal(first, expected[0]) and torch.equal(second, expected[1])


def test_files_of_a_subset_of_a_subset(image_folder):
    """--limit-val makes a Subset, and a process's share under torchrun a Subset of it: eval_on device read the inner one."""
    from rsbkit.core.data import EvalInput, eval_shard

    data = load_data(image_folder)
    limited = Subset(data.val, [5, 3, 1, 0])
    share = eval_shard(limited, rank=1, world_size=2)
    assert [p for p, _ in files_of(share).samples] == [data.val.samples[i][0] for i in (3, 0)]
    assert files_of(Subset(Subset(Subset(data.val, [4, 2, 0]), [2, 1]), [1])).samples == [data.val.samples[2]]
    assert files_of(Subset(_NotFiles(), [0])) is None
    shard = EvalInput(share, 32, 0.95, "bicubic", device="cpu", batch_size=2, workers=0)
    images, labels, skipped = next(iter(shard))
    assert images.shape == (2, 3, 32, 32) and skipped == []


def test_arrays_under_a_subset_of_a_subset_stay_arrays(embedded):
    """A Subset of a Subset of in-memory arrays is still the 'arrays' path (one array index per micro-batch, cropped on
    the device), with the composed indices; it used to take the PIL crops path, silently."""
    from rsbkit.core.data import ArrayBatches, Data, batch_bytes, input_kind

    nested = Subset(Subset(embedded.train, list(range(100, 200))), [7, 3, 50, 0])  # rows 107, 103, 150, 100
    data = Data("nested", nested, embedded.val, embedded.classes, "in memory")
    recipe = smoke(A3, batch_size=4)
    assert input_kind(data, recipe, "device", "auto", torch.device("cpu")) == "arrays"
    assert batch_bytes("arrays", data, 4, 32) == batch_bytes("arrays", embedded, 4, 32) == 4 * 28 * 28 * 3
    images, labels = ArrayBatches(nested).__getitems__([(k, 0) for k in range(4)])[0]
    rows = [107, 103, 150, 100]
    assert torch.equal(images[:, 0], torch.from_numpy(embedded.train.images[rows]))
    assert labels.tolist() == embedded.train.labels[rows].tolist()
    source = TrainInput(data, recipe, plan_batch(recipe), augment_on="device")
    assert source.kind == "arrays" and next(iter(source.epoch(0, torch.Generator().manual_seed(0))))[0].shape == (4, 3, 32, 32)


class _NotFiles(torch.utils.data.Dataset):
    def __len__(self):
        return 1

    def __getitem__(self, i):
        return Image.new("RGB", (4, 4)), 0


def test_eval_on_auto_decodes_jpeg_folders_on_cuda_only(image_folder, embedded):
    folder = load_data(image_folder)
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    assert eval_kind(folder.val, "auto", cuda) == "device"
    assert eval_kind(Subset(folder.val, [0, 1]), "auto", cuda) == "device"
    assert eval_kind(folder.val, "auto", cpu) == "loader"  # every CPU run evaluates with timm's PIL transform
    assert eval_kind(embedded.val, "auto", cuda) == "loader"  # arrays, not files
    pngs = ImageFiles([(f"x{i}.png", 0) for i in range(10)])
    assert eval_kind(pngs, "auto", cuda) == "loader"
    assert eval_kind(folder.val, "device", cpu) == "device" and eval_kind(folder.val, "loader", cuda) == "loader"
    assert A3.eval_on == "auto"


def test_the_loaders_host_memory_in_flight_is_stated(embedded):
    """A3's micro-batch 2048 at 160 px on the loader path with 12 workers prefetching 4 holds 48 float32 batches."""
    line = in_flight_note("loader", embedded, 2048, 160, workers=12, prefetch=4, pinned=True)
    assert f"= {48 * 2048 * 3 * 160 * 160 * 4 / 2**30:,.1f} GB" in line and "= 28.1 GB" in line
    assert "48 micro-batches" in line and "pinned" in line
    arrays = in_flight_note("arrays", embedded, 256, 32, workers=0)
    assert f"{256 * 28 * 28 * 3 / 2**20:,.0f} MB" in arrays and "1 micro-batch" in arrays


def test_an_unexpected_error_of_the_device_path_names_the_setting_that_avoids_it(embedded, monkeypatch):
    recipe = smoke(A3, batch_size=16)
    source = TrainInput(embedded, recipe, plan_batch(recipe), augment_on="device")

    def broken(*args, **kwargs):
        raise ValueError("a kernel this GPU lacks")

    monkeypatch.setattr(source.augment, "__call__", broken, raising=False)
    monkeypatch.setattr(type(source.augment), "__call__", broken)
    with pytest.raises(InputPathError, match=r"device input path \('arrays'.*a kernel this GPU lacks.*augment_on: loader"):
        next(iter(source.epoch(0, torch.Generator().manual_seed(0))))

    def full(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory (injected)")

    monkeypatch.setattr(type(source.augment), "__call__", full)
    with pytest.raises(torch.OutOfMemoryError):  # the fallback's to handle, as it is
        next(iter(source.epoch(0, torch.Generator().manual_seed(0))))


def test_several_input_threads_keep_the_order_and_stop_when_closed():
    """ahead_parallel: 3 threads preparing items of uneven cost hand them over in the items' order; an error is raised
    at its item; closing early leaves no thread."""
    import random
    import time

    from rsbkit.core.data import ahead_parallel

    delays = random.Random(0)

    def prepare(index, item):
        time.sleep(delays.uniform(0, 0.02))
        if item == 7:
            raise ValueError("item 7 is bad")
        return torch.tensor([item]), torch.tensor([index]), []

    cpu = torch.device("cpu")
    got = []
    with pytest.raises(ValueError, match="item 7"):
        for a, b, _ in ahead_parallel(range(20), prepare, cpu, [None] * 3):
            got.append((int(a), int(b)))
    assert got == [(i, i) for i in range(7)] and _input_threads() == []
    ok = [int(a) for a, _, _ in ahead_parallel(range(8, 30), prepare, cpu, [None] * 3)]
    assert ok == list(range(8, 30))
    early = ahead_parallel(range(100), prepare, cpu, [None] * 4)
    next(early)
    early.close()
    assert _input_threads() == []


def test_an_epoch_is_the_same_with_any_number_of_input_threads(embedded):
    """With several threads each batch's draws are seeded from its index: 2 and 3 threads give the same epoch."""
    recipe = smoke(A3, batch_size=16)
    epochs = []
    for threads in (2, 3):
        source = TrainInput(embedded, recipe, plan_batch(recipe), augment_on="device", threaded=True, threads=threads)
        batches = source.epoch(5, torch.Generator().manual_seed(0))
        epochs.append([next(batches)[0] for _ in range(6)])
        batches.close()
    assert len(epochs[0]) == 6 and all(torch.equal(a, b) for a, b in zip(*epochs))
    assert not torch.equal(epochs[0][0], epochs[0][1])
