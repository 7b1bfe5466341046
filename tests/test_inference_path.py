"""The batched inference path (`mtl_hf/inference/batches.py`): one device -> host copy per batch and nothing else
on the way (checked on the `meta` device, as strictly as a GPU), positions kept around broken photos, a batch of
broken photos answered with a padding forward."""

from __future__ import annotations

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from mtl_hf.data import ImageTransforms, MultiTaskCollator
from mtl_hf.data.sources import RawExample
from mtl_hf.inference.batches import RowBatch, inference_loader, padding_pixels, run_batches, source_batches
from tests.device_guard import DeviceMixGuard
from tests.training_helpers import new_model, shop_source


class HostCopies(TorchDispatchMode):
    """Counts copies from `meta` to the host and answers them with zeros of the right shape (a `meta` tensor has
    no values to copy); any other way of reading a value off the device raises, as `meta` does."""

    def __init__(self):
        super().__init__()
        self.shapes = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        source = [t for t in tree_leaves(args) if isinstance(t, torch.Tensor)]
        if func is torch.ops.aten._to_copy.default and source[0].device.type == "meta":
            if kwargs.get("device") == torch.device("cpu"):
                self.shapes.append(tuple(source[0].shape))
                return torch.zeros(source[0].shape, dtype=kwargs.get("dtype") or source[0].dtype)
        return func(*args, **kwargs)


def to_meta(inputs: dict) -> dict:
    return {key: value.to("meta") if torch.is_tensor(value) else value for key, value in inputs.items()}


def test_each_batch_reaches_the_host_in_one_copy_and_nothing_else_leaves_the_device():
    source = shop_source(rows=10)
    model = new_model(source).to("meta")
    transform = ImageTransforms(size=(32, 32))
    loader = inference_loader(
        source_batches(source, 4), MultiTaskCollator(source.task_specs, transform, for_inference=True)
    )
    copies = HostCopies()
    with DeviceMixGuard(), copies:
        outputs = list(run_batches(model, loader, padding=padding_pixels(transform), prepare=to_meta, with_labels=True))
    widths = sum(spec.num_outputs for spec in source.task_specs)
    assert copies.shapes == [(4, widths), (4, widths), (2, widths)]  # one copy a batch, every task's logits in it
    assert [o.positions.tolist() for o in outputs] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert {name: values.shape for name, values in outputs[2].logits.items()} == {
        spec.name: (2, len(spec.labels)) if spec.type != "regression" else (2, 1) for spec in source.task_specs
    }
    assert set(outputs[0].labels) == set(source.task_names)  # targets from the host batch, never copied back


def test_positions_skip_broken_photos_and_a_batch_of_broken_photos_runs_the_padding_batch():
    source = shop_source(rows=4)
    model = new_model(source).eval()
    forwards = []
    model.register_forward_hook(
        lambda module, args, kwargs, output: forwards.append(kwargs["pixel_values"].shape[0]), with_kwargs=True
    )
    transform = ImageTransforms(size=(32, 32))
    good = source.rows(range(3))
    broken = [RawExample(b"not an image", {}, "shop", row, skip_if_undecodable=True) for row in ("x", "y")]
    batches = [
        RowBatch([good[0], broken[0], good[1]], [10, 11, 12]),
        RowBatch(broken, [13, 14]),
        RowBatch([good[2]], [15]),
    ]
    loader = inference_loader(iter(batches), MultiTaskCollator([], transform, for_inference=True))
    outputs = list(run_batches(model, loader, padding=padding_pixels(transform), prepare=dict))
    assert [o.positions.tolist() for o in outputs] == [[10, 12], [], [15]]
    assert forwards == [2, 1, 1]  # the all-broken batch: one padding image, its outputs dropped
    assert outputs[1].logits == {} and [row for row, _, _ in outputs[1].skipped_rows] == ["x", "y"]
    assert [kind for _, kind, _ in outputs[0].skipped_rows] == ["UnidentifiedImageError"]
    with torch.no_grad():
        expected = model(pixel_values=transform.to_tensor([transform.resize(transform.decode(good[0].image))])).logits
    torch.testing.assert_close(
        torch.from_numpy(outputs[0].logits["category"][:1]), expected["category"], atol=1e-5, rtol=0
    )
