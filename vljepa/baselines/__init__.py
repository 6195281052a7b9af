"""Baselines trained under VL-JEPA's controlled conditions (paper Sec. 4.2).

``TokenVLM``: a token-generating VLM over the same frozen x-encoder tokens and the same LM layers
as the VL-JEPA predictor, trained with next-token cross-entropy on the same batches.
"""

from vljepa.baselines.evaluate import evaluate_token_vlm
from vljepa.baselines.token_vlm import (GenerateResult, TokenVLM, TokenVLMConfig, build_token_vlm,
                                        load_token_vlm)
from vljepa.baselines.train import TokenVLMTrainResult, train_token_vlm

__all__ = ["GenerateResult", "TokenVLM", "TokenVLMConfig", "TokenVLMTrainResult", "build_token_vlm",
           "evaluate_token_vlm", "load_token_vlm", "train_token_vlm"]
