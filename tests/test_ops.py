"""The pure-PyTorch StyleGAN2 ops against naive definitions, and the fast ops against the reference ones."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from mmfs.nn import fast_ops, ops


def naive_upfirdn2d(x, kernel, up, down, pad):
    """Loop straight from the definition: zero-insert, pad/crop, convolve (flipped kernel), decimate."""
    p0, p1 = pad
    b, c, h, w = x.shape
    kh, kw = kernel.shape
    hu, wu = h * up, w * up

    def padded(n, m):  # value of the zero-inserted, padded signal at (n, m)
        i, j = n - p0, m - p0
        if not (0 <= i < hu and 0 <= j < wu) or i % up or j % up:
            return torch.zeros(b, c, dtype=x.dtype)
        return x[:, :, i // up, j // up]

    hp, wp = hu + p0 + p1, wu + p0 + p1
    oh, ow = (hp - kh) // down + 1, (wp - kw) // down + 1
    out = torch.zeros(b, c, oh, ow, dtype=x.dtype)
    for n in range(oh):
        for m in range(ow):
            acc = torch.zeros(b, c, dtype=x.dtype)
            for a in range(kh):
                for d in range(kw):
                    acc += padded(n * down + a, m * down + d) * kernel[kh - 1 - a, kw - 1 - d]
            out[:, :, n, m] = acc
    return out


ASYM = torch.tensor([[1.0, 2.0, 0.5, -1.0], [0.3, 3.0, 1.0, 2.0], [1.5, -0.5, 2.0, 1.0], [0.0, 1.0, 4.0, 0.2]])


@pytest.mark.parametrize(
    "up,down,pad",
    [(1, 1, (1, 1)), (2, 1, (2, 1)), (1, 2, (2, 2)), (1, 2, (1, 1)), (2, 1, (1, 0)), (1, 1, (-1, 2)), (2, 2, (1, 2))],
)
def test_upfirdn2d_matches_naive_loop(up, down, pad):
    torch.manual_seed(0)
    x = torch.randn(2, 3, 5, 5, dtype=torch.float64)
    k = ASYM.double()  # asymmetric, so a missing flip would show
    got = ops.upfirdn2d(x, k, up=up, down=down, pad=pad)
    want = naive_upfirdn2d(x, k, up, down, pad)
    assert got.shape == want.shape
    torch.testing.assert_close(got, want)


def test_make_kernel_is_normalised_outer_product():
    k = ops.make_kernel([1, 3, 3, 1])
    assert k.shape == (4, 4)
    assert math.isclose(float(k.sum()), 1.0, rel_tol=1e-6)
    torch.testing.assert_close(k, torch.tensor([1.0, 3, 3, 1])[:, None] * torch.tensor([1.0, 3, 3, 1]) / 64)


@pytest.mark.parametrize("kernel", ["blur", "asym"])
@pytest.mark.parametrize("pad", [(1, 1), (2, 2), (2, 1), (0, 0)])
def test_fast_blur_matches_reference(kernel, pad):
    torch.manual_seed(1)
    k = ops.make_kernel([1, 3, 3, 1]) if kernel == "blur" else ASYM
    x = torch.randn(2, 5, 9, 9, dtype=torch.float64)
    torch.testing.assert_close(fast_ops.blur(x, k.double(), pad), ops.upfirdn2d(x, k.double(), pad=pad))


@pytest.mark.parametrize("kernel", ["blur", "asym"])
@pytest.mark.parametrize("pad", [(1, 1), (2, 2), (2, 1)])
def test_fast_blur_down_matches_reference(kernel, pad):
    torch.manual_seed(2)
    k = ops.make_kernel([1, 3, 3, 1]) if kernel == "blur" else ASYM
    x = torch.randn(2, 4, 8, 8, dtype=torch.float64)
    torch.testing.assert_close(fast_ops.blur_down(x, k.double(), pad), ops.upfirdn2d(x, k.double(), down=2, pad=pad))


@pytest.mark.parametrize("kernel", ["blur", "asym"])
@pytest.mark.parametrize("pad", [(2, 1), (1, 0), (3, 2), (1, 1), (4, 4), (0, 0)])
def test_fast_upsample_matches_zero_insertion(kernel, pad):
    torch.manual_seed(3)
    k = (ops.make_kernel([1, 3, 3, 1]) if kernel == "blur" else ASYM).double() * 4
    x = torch.randn(2, 3, 6, 6, dtype=torch.float64)
    want = ops.upfirdn2d(x, k, up=2, pad=pad)
    got = fast_ops.upsample_2x(x, k, pad)
    assert got.shape == want.shape
    torch.testing.assert_close(got, want)


@pytest.mark.parametrize("stride,padding,size", [(1, 0, 9), (1, 2, 8), (1, 3, 7), (2, 1, 8), (2, 1, 9), (2, 0, 10)])
def test_constant_depthwise_gradients_match_autograd(stride, padding, size):
    """`ConstantDepthwise`'s own backward gives autograd's input and bias gradients, first and second order."""
    torch.manual_seed(4)
    weight = ASYM.double()[None, None].expand(3, 1, 4, 4)
    x = torch.randn(2, 3, size, size, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(3, dtype=torch.float64, requires_grad=True)

    def grads(conv):
        out = conv(x, weight, bias, stride, padding)
        gx, gb = torch.autograd.grad(out.pow(3).sum(), (x, bias), create_graph=True)  # grad_out depends on x
        return (out, gx, gb, *torch.autograd.grad(gx.square().sum() + gb.square().sum(), (x, bias)))

    def reference(x, weight, bias, stride, padding):
        return F.conv2d(x, weight, bias, stride=stride, padding=padding, groups=x.shape[1])

    for got, want in zip(grads(fast_ops.ConstantDepthwise.apply), grads(reference), strict=True):
        torch.testing.assert_close(got, want)
    assert torch.autograd.gradcheck(lambda t: fast_ops.depthwise(t, weight, None, stride, padding), (x,))


def test_fast_ops_keep_channels_last():
    x = torch.randn(1, 8, 16, 16).contiguous(memory_format=torch.channels_last)
    k = ops.make_kernel([1, 3, 3, 1])
    out = fast_ops.blur(x, k, (1, 1))
    assert out.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(out, ops.upfirdn2d(x.contiguous(), k, pad=(1, 1)))


def test_fused_leaky_relu_formula():
    x = torch.randn(2, 4, 3, 3)
    b = torch.randn(4)
    want = F.leaky_relu(x + b[None, :, None, None], 0.2) * math.sqrt(2)
    torch.testing.assert_close(ops.fused_leaky_relu(x, b), want)
    # 2-D input (EqualLinear with activation)
    x2 = torch.randn(5, 4)
    torch.testing.assert_close(ops.fused_leaky_relu(x2, b), F.leaky_relu(x2 + b, 0.2) * math.sqrt(2))
