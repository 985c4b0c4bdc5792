"""Where the small shared helpers used to live: shapes in :mod:`convnet.shapes`, files in :mod:`convnet.files`.

The names stay importable from here.
"""
from .files import (OUTPUTS_MANIFEST, STALE_SECONDS, STALE_SECONDS_OTHER_HOST, atomic_path,  # noqa: F401
                    directory_problem, os_error_message, record_output, remove_stale_temporaries,
                    written_by_convnet)
from .shapes import conv_output_size, normalize_padding, normalize_tuple, pad_amounts  # noqa: F401
