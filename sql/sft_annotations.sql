-- The embedded default SFT samples of one split: every VQA pair (question -> answer), caption
-- (query-free, the "pretraining data" part of the mix) and class label (fixed query -> "a <label>").
-- Also the lookup table for draws of a named mix (preprocessing.mix.draw: source_id, task, idx).
SELECT
    a.source_id,
    a.task,
    a.idx,
    CASE a.task WHEN 'vqa' THEN a.question WHEN 'classification' THEN $classification_query ELSE '' END AS query,
    CASE a.task WHEN 'vqa' THEN a.answer WHEN 'caption' THEN a.text ELSE 'a ' || a.label END AS target
FROM annotations AS a
JOIN splits AS sp ON sp.source_id = a.source_id
WHERE sp.dataset = $dataset AND sp.split = $split AND a.task IN ('vqa', 'caption', 'classification')
ORDER BY a.source_id, a.task, a.idx;
