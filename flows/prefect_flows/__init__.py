"""The Prefect flows: one file per flow, named after it, a few lines each over the plain
functions of ``flows/``. The only package of the project that imports Prefect at module level.

| flow                 | file                     | deployments                           |
|----------------------|--------------------------|---------------------------------------|
| pretrain             | pretrain.py              | pretrain/full, pretrain/image-only    |
| sft                  | sft.py                   | sft/full                              |
| preprocess           | preprocess.py            | preprocess/full                       |
| evaluate             | evaluate.py              | evaluate/full                         |
| compare              | compare.py               | compare/vlm-vs-jepa                   |
| ablate               | ablate.py                | ablate/<sweep>, one per sweep         |
| selective-decoding   | selective_decoding.py    | selective-decoding/sweep, /benchmark  |

``deploy.py`` registers them all (``python -m flows.prefect_flows.deploy``, or ``vljepa deploy``).
"""
