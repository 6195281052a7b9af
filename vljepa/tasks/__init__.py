"""The paper's evaluation tasks on cached tokens (arXiv 2512.10942, Sec. 4), one module each.

Every task takes a model (and, for the generative ones, a y-decoder) and a ``TaskData`` of one
split, and returns a ``TaskResult`` (metrics with their chance levels beside them, plus what the
plots need); ``write_result`` saves it as JSON and as a markdown table. Reading the split from
the DuckDB manifest lives at the edge (``flows/evaluate.py``): this package is pure torch.
"""

from vljepa.tasks.common import TaskData, TaskResult, write_result

__all__ = ["TaskData", "TaskResult", "write_result"]
