"""VL-JEPA as an MLflow ``pyfunc`` model (weights as safetensors + config JSON, no pickle).

Input: a DataFrame with either a ``text`` column (strings → y-encoder target embeddings) or a
``tokens`` column (flattened cached visual tokens ``N*D`` floats → predicted embeddings; an
optional ``query`` column conditions the predictor). Output: one embedding per row.
"""

from __future__ import annotations

import mlflow.pyfunc


class VLJepaPyfunc(mlflow.pyfunc.PythonModel):
    def load_context(self, context) -> None:
        from vljepa.train import load_checkpoint

        self.model = load_checkpoint(context.artifacts["checkpoint"])

    def predict(self, context, model_input, params=None):
        import numpy as np
        import pandas as pd
        import torch

        model = self.model
        with torch.no_grad():
            if "text" in model_input.columns:
                out = model.encode_text([str(t) for t in model_input["text"]])
            elif "tokens" in model_input.columns:
                width = model.predictor.visual_proj.in_features
                flat = np.stack([np.asarray(t, dtype=np.float32) for t in model_input["tokens"]])
                visual = torch.from_numpy(flat.reshape(len(flat), -1, width))
                queries = list(model_input["query"]) if "query" in model_input.columns else None
                out = model.predict(visual, queries)
            else:
                raise ValueError("input needs a 'text' or a 'tokens' column")
        out = torch.nn.functional.normalize(out.float(), dim=-1).numpy()
        return pd.DataFrame({"embedding": list(out)})


def log_pyfunc_model(checkpoint_dir: str) -> str:
    """Log the checkpoint as a pyfunc model in the active run; returns its ``runs:/`` URI."""
    import pandas as pd

    example = pd.DataFrame({"text": ["a small red circle moves left", "two large blue squares move up"]})
    info = mlflow.pyfunc.log_model(
        name="model",
        python_model=VLJepaPyfunc(),
        artifacts={"checkpoint": checkpoint_dir},
        input_example=example,
        code_paths=None,
    )
    return info.model_uri
