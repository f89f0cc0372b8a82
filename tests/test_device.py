"""``worldvid.device.resolve_device``: the one default (CUDA when present, else CPU) and clear errors."""

from __future__ import annotations

import pytest
import torch

from worldvid.device import resolve_device


def test_none_is_cuda_when_present_else_cpu():
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device(None) == resolve_device() == torch.device(expected)


def test_strings_and_devices_are_returned_as_torch_devices():
    assert resolve_device("cpu") == resolve_device(torch.device("cpu")) == torch.device("cpu")
    assert isinstance(resolve_device("cpu"), torch.device)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
@pytest.mark.parametrize("device", ["cuda", "cuda:1", torch.device("cuda")])
def test_cuda_without_cuda_is_a_clear_one_line_error(device):
    with pytest.raises(ValueError, match=r"^device 'cuda(:1)?' asked for but CUDA is not available on this machine$"):
        resolve_device(device)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_is_accepted_where_present_and_a_missing_index_is_named():
    assert resolve_device("cuda").type == "cuda"
    beyond = f"cuda:{torch.cuda.device_count()}"
    with pytest.raises(ValueError, match=f"'{beyond}'"):
        resolve_device(beyond)


@pytest.mark.parametrize("device", ["gpu", "CUDA", "cuda:x", "", "meta"])
def test_an_unknown_device_string_is_named(device):
    with pytest.raises(ValueError, match=f"unknown device '{device}'") as info:
        resolve_device(device)
    assert "\n" not in str(info.value)


def test_a_non_device_is_a_type_error():
    with pytest.raises(TypeError, match="device must be"):
        resolve_device(0)  # type: ignore[arg-type]
