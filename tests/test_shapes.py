"""convnet.shapes: Keras's output sizes and TensorFlow's padding, against hand-computed values."""
import pytest

from convnet.shapes import conv_output_size, normalize_padding, normalize_tuple, pad_amounts


@pytest.mark.parametrize("size,k,stride,padding,out", [(25, 2, 2, "valid", 12), (9, 2, 2, "valid", 4),
                                                       (28, 4, 1, "valid", 25), (7, 3, 2, "same", 4),
                                                       (8, 3, 2, "same", 4)])
def test_output_sizes_floor_for_valid_and_ceil_for_same(size, k, stride, padding, out):
    assert conv_output_size(size, k, stride, padding) == out


def test_padding_puts_the_odd_one_after():
    assert pad_amounts(8, 3, 2, "same") == (0, 1)       # out 4: (4 - 1) * 2 + 3 - 8 = 1
    assert pad_amounts(7, 4, 1, "same") == (1, 2)
    assert pad_amounts(7, 4, 1, "valid") == (0, 0)


def test_arguments_are_normalized_or_refused():
    assert normalize_tuple(2, 2, "pool_size") == (2, 2)
    assert normalize_padding("SAME") == "same"
    with pytest.raises(ValueError, match="kernel_size must be a positive int"):
        normalize_tuple((2, 0), 2, "kernel_size")
    with pytest.raises(ValueError, match="padding must be 'valid' or 'same'"):
        normalize_padding("full")
