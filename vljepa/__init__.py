"""VL-JEPA: a vision-language model that predicts the embedding of the answer text.

The model and its maths only (torch + transformers). Orchestration (Prefect, Ray, submitit,
MLflow, DuckDB) lives in ``flows/`` and ``preprocessing/`` and is never imported from here.
"""

__version__ = "0.1.0"
