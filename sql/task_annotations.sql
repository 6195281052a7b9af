-- Every annotation of one split's sources, for the evaluation tasks (flows/evaluate.py).
-- Captions (idx 0), events in order with start/end and attribute JSON, VQA pairs, labels.
SELECT
    a.source_id,
    a.task,
    a.idx,
    a.text,
    a.question,
    a.answer,
    a.label,
    a.start_s,
    a.end_s,
    a.attributes
FROM annotations AS a
JOIN splits AS sp ON sp.source_id = a.source_id
WHERE sp.dataset = $dataset AND sp.split = $split
ORDER BY a.source_id, a.task, a.idx;
