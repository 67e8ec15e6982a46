"""Loading a pickled list of label ids without running whatever else a pickle may ask for.

A pickle can call any importable function while it loads (`os.system`, ...), so plain
`pickle.load` of a downloaded file runs the sender's code. This unpickler resolves only the
globals a numpy object array of `str` needs (in every protocol, numpy 1 or 2) and refuses all
others.
"""
from __future__ import annotations

import codecs
import pickle

import numpy as np

from ...errors import OvmlError
from .base import file_error

# numpy's array-rebuilding function, whichever module this numpy version keeps it in.
_RECONSTRUCT = np.empty(0).__reduce__()[0]


def latin1_encode(text: str, encoding: str) -> bytes:
    """`_codecs.encode` as protocols 0-2 use it for bytes (always latin1), and nothing else."""
    if encoding != "latin1":
        raise pickle.UnpicklingError(f"_codecs.encode with encoding {encoding!r}")
    return codecs.encode(text, encoding)


ALLOWED_GLOBALS = {
    ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,  # numpy >= 2 pickles
    ("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,   # numpy 1 pickles
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): latin1_encode,                      # bytes in protocols 0-2
}


class RefusedGlobal(OvmlError, pickle.UnpicklingError):
    """The pickle asked for a global outside ALLOWED_GLOBALS."""


class StringArrayUnpickler(pickle.Unpickler):
    """An unpickler that can rebuild numpy arrays and nothing that runs other code."""

    def find_class(self, module: str, name: str):
        try:
            return ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise RefusedGlobal(f"{module}.{name}") from None


def load_string_list(path: str) -> list[str]:
    """The strings of a pickled 1-D numpy array (or list) of `str`, loaded safely."""
    try:
        with open(path, "rb") as handle:
            value = StringArrayUnpickler(handle).load()
    except RefusedGlobal as err:
        raise file_error(path, None, f"refused to load: the pickle asks for {err}, which a list of "
                                     "label ids never needs (it may be malicious)") from None
    except Exception as err:  # a corrupt pickle can fail in almost any way
        raise file_error(path, None, f"not a readable pickle ({type(err).__name__}: {err})") from None
    items = value.tolist() if isinstance(value, np.ndarray) and value.ndim == 1 else value
    if not isinstance(items, list) or not all(isinstance(item, str) for item in items):
        raise file_error(path, None, "expected a 1-D array or list of strings")
    return items
