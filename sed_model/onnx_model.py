"""An exported model (:mod:`sed_model.export`) run with onnxruntime.

:class:`OnnxNet` reads the graph and its metadata (class names, normalisation statistics,
variant); :func:`load_onnx` makes the :class:`sed_model.api.OnnxMember` that
``sed_model.load_model("model.onnx")`` uses. onnxruntime is an optional extra
(``pip install 'sed-dense-lstm[onnx]'``); without it loading says so in one line.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .errors import SedError


class OnnxNet:
    """One ONNX file: :meth:`probabilities` of normalised, padded frames."""

    def __init__(self, path: str | Path) -> None:
        from .export import ONNX_FORMAT, require

        ort = require("onnxruntime")
        self.path = Path(path)
        if not self.path.is_file():
            raise SedError(f"ONNX model {self.path} does not exist")
        options = ort.SessionOptions()
        options.log_severity_level = 3  # errors only
        try:
            self.session = ort.InferenceSession(str(self.path), options,
                                                providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own types for unreadable files
            raise SedError(f"cannot read ONNX model {self.path}: "
                           f"{str(exc).splitlines()[0]}") from None
        props = self.session.get_modelmeta().custom_metadata_map
        if props.get("format") != json.dumps(ONNX_FORMAT):
            raise SedError(f"{self.path} was not written by python -m sed_model.export (no "
                           f"format {ONNX_FORMAT!r} in its metadata)")
        self.metadata = {key: json.loads(value) for key, value in props.items()}
        self.variant = self.metadata["variant"]
        self.class_names = list(self.metadata["class_names"])

    def probabilities(self, features: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        """(B, classes) for ``features`` (B, T, 130) float32 and ``lengths`` (B,)."""
        return self.session.run(None, {
            "features": np.ascontiguousarray(features, dtype=np.float32),
            "lengths": np.asarray(lengths, dtype=np.int64)})[0]
