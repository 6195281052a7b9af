"""VL-JEPA as an MLflow ``pyfunc`` model (weights as safetensors + config JSON, no pickle).

Input DataFrame, one row per request, with exactly one of
  ``video``   path of a video file (decoded with ffmpeg and encoded by the frozen x-encoder),
  ``tokens``  cached visual tokens, flattened ``N*D`` floats,
  ``text``    a target text (→ the y-encoder's embedding),
and an optional ``query`` column (the predictor's text query; "" = none).
Params: ``decode`` (bool, default False) adds a ``text`` output decoded by the y-decoder
(logged only when a decoder was given); ``num_beams`` (int, default 1).
Output DataFrame: ``embedding`` (unit-norm shared-space vector) and, when decoding, ``text``.

Served weights are loaded from safetensors in ``load_context``; nothing is pickled but this
class. A torch.export (pt2) model is avoided: it would fix the batch size (STACK-NOTES).
"""

from __future__ import annotations

import mlflow.pyfunc

INPUT_KINDS = ("video", "tokens", "text")


class VLJepaPyfunc(mlflow.pyfunc.PythonModel):
    def load_context(self, context) -> None:
        from vljepa.checkpoint import load_checkpoint

        self.checkpoint_dir = context.artifacts["checkpoint"]  # its config.json: where `--set` overrides apply
        self.model = load_checkpoint(self.checkpoint_dir)
        self.decoder = None
        if context.artifacts.get("decoder"):
            from vljepa.decoder import load_decoder

            self.decoder = load_decoder(context.artifacts["decoder"])
        self.x_encoder = None  # built on the first video request

    def _video_tokens(self, paths: list[str]):
        import torch

        from preprocessing.decode import decode_frames, frames_to_tensor
        from vljepa.encoders import build_x_encoder

        if self.x_encoder is None:
            self.x_encoder = build_x_encoder(self.model.cfg.x_encoder)
        spec = self.x_encoder.spec
        pixels = torch.stack([
            frames_to_tensor(decode_frames(p, num_frames=spec.num_frames, size=spec.image_size).frames, spec.mean, spec.std)
            for p in paths])  # (B, T, 3, H, W)
        with torch.inference_mode():
            return self.x_encoder.encode(pixels).float()  # (B, N, D)

    def predict(self, context, model_input, params=None):
        import numpy as np
        import pandas as pd
        import torch

        params = params or {}
        kinds = [k for k in INPUT_KINDS if k in model_input.columns]
        if len(kinds) != 1:
            raise ValueError(f"input needs exactly one of the columns {INPUT_KINDS}; got {list(model_input.columns)}")
        kind = kinds[0]
        model = self.model
        with torch.no_grad():
            if kind == "text":
                out = model.encode_text([str(t) for t in model_input["text"]])
            else:
                if kind == "tokens":
                    width = model.predictor.visual_proj.in_features
                    flat = np.stack([np.asarray(t, dtype=np.float32) for t in model_input["tokens"]])
                    visual = torch.from_numpy(flat.reshape(len(flat), -1, width))
                else:
                    visual = self._video_tokens([str(p) for p in model_input["video"]])
                queries = [str(q) for q in model_input["query"]] if "query" in model_input.columns else None
                out = model.predict(visual, queries)
        out = torch.nn.functional.normalize(out.float(), dim=-1)
        result = pd.DataFrame({"embedding": list(out.numpy())})
        if params.get("decode"):
            if self.decoder is None:
                raise ValueError("this model was logged without a y-decoder; decode=True is not available")
            result["text"] = self.decoder.generate(out, num_beams=int(params.get("num_beams", 1)))
        return result


def signature():
    """Every input column optional (a request uses one of video / tokens / text); params typed."""
    from mlflow.models import ModelSignature
    from mlflow.types.schema import Array, ColSpec, ParamSchema, ParamSpec, Schema

    inputs = Schema([ColSpec("string", "video", required=False), ColSpec(Array("double"), "tokens", required=False),
                     ColSpec("string", "text", required=False), ColSpec("string", "query", required=False)])
    outputs = Schema([ColSpec(Array("float"), "embedding"), ColSpec("string", "text", required=False)])
    params = ParamSchema([ParamSpec("decode", "boolean", False), ParamSpec("num_beams", "long", 1)])
    return ModelSignature(inputs=inputs, outputs=outputs, params=params)


# What loading the pyfunc imports: the project (its own dependencies come with it), the libraries its
# weights load through, and MLflow's side. Pinned to what logged the model.
SERVING_DISTRIBUTIONS = ("vljepa-pipeline", "torch", "transformers", "safetensors", "numpy", "pandas", "mlflow",
                         "cloudpickle")


def serving_requirements() -> list[str]:
    """``NAME==VERSION`` for each of ``SERVING_DISTRIBUTIONS`` installed here (a local version label such
    as torch's ``+cpu`` dropped: a GPU server installs its own build of the same release).

    Given to MLflow rather than inferred: inference loads the model in a subprocess to see what it
    imports (7 s a model on 2 cores) and, here, missed torch and transformers."""
    from importlib.metadata import PackageNotFoundError, version

    pins = []
    for name in SERVING_DISTRIBUTIONS:
        try:
            pins.append(f"{name}=={version(name).split('+')[0]}")
        except PackageNotFoundError:  # e.g. the project run from a checkout it was not installed from
            continue
    return pins


def log_pyfunc_model(checkpoint_dir: str, decoder_dir: str | None = None, *, name: str = "model",
                     tokens_example=None) -> str:
    """Log the checkpoint (+ y-decoder) as a pyfunc model in the active run; returns its model URI.

    tokens_example: optional ``(2, N*D)`` array of cached tokens; with it the input example uses
    the ``tokens`` + ``query`` columns (batch of 2), otherwise the ``text`` column.
    """
    import pandas as pd

    if tokens_example is not None:
        example = pd.DataFrame({"tokens": [[float(x) for x in row] for row in tokens_example], "query": ["", ""]})
    else:
        example = pd.DataFrame({"text": ["a small red circle moves left", "two large blue squares move up"]})
    artifacts = {"checkpoint": str(checkpoint_dir)}
    if decoder_dir is not None:
        artifacts["decoder"] = str(decoder_dir)
    info = mlflow.pyfunc.log_model(
        name=name,
        python_model=VLJepaPyfunc(),  # weights stay in the artifacts; this instance holds none
        artifacts=artifacts,
        input_example=example,
        signature=signature(),
        pip_requirements=serving_requirements(),
    )
    return info.model_uri
