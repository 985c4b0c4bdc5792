"""convnet.limits (convnet.io.limits): each limit admits what it names and refuses one more."""
import pytest

from convnet import layers
from convnet.io import limits


def test_the_layer_limit_admits_exactly_max_layers():
    assert len(limits.layer_shapes([layers.ReLU() for _ in range(limits.MAX_LAYERS)], (4,))) == limits.MAX_LAYERS
    with pytest.raises(limits.LimitError, match=f"{limits.MAX_LAYERS + 1} layers; at most {limits.MAX_LAYERS}"):
        limits.layer_shapes([layers.ReLU() for _ in range(limits.MAX_LAYERS + 1)], (4,))


def test_the_input_limit_admits_exactly_max_units():
    assert limits.input_shape_problem((1024, 1024, 1)) is None           # MAX_UNITS values
    assert "at most 1,048,576 values" in limits.input_shape_problem((1024, 1025, 1))


@pytest.mark.parametrize("channels, refused", [(113, False), (114, True)])
def test_the_window_limit_counts_the_input_channels(channels, refused):
    # a 3x3 'same' conv on 64x64: 4,096 x 9 = 36,864 window values per input channel; 2**22 / 36,864 = 113.8
    conv = layers.Conv2D(1, 3, padding="same")
    if refused:
        with pytest.raises(limits.LimitError, match="window values per image"):
            limits.layer_shapes([conv], (64, 64, channels))
    else:
        assert limits.layer_shapes([conv], (64, 64, channels))[0][2] == (64, 64, 1)
