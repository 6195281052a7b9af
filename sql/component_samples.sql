-- The training samples of one mix component (preprocessing.mix.component_samples): the
-- annotations of one task in one dataset's split as (query, target), in a stable order. The same
-- CASE as sft_annotations.sql: vqa question -> answer; caption '' -> text; classification
-- $classification_query -> 'a <label>'; event '' -> its text. A NULL or empty target is no sample.
SELECT source_id, idx, query, target
FROM (
    SELECT
        a.source_id,
        a.idx,
        CASE a.task WHEN 'vqa' THEN a.question WHEN 'classification' THEN $classification_query ELSE '' END AS query,
        CASE a.task WHEN 'vqa' THEN a.answer WHEN 'classification' THEN 'a ' || a.label ELSE a.text END AS target
    FROM annotations AS a
    JOIN splits AS sp ON sp.source_id = a.source_id
    WHERE a.task = $task AND sp.dataset = $dataset AND sp.split = $split
) AS samples
WHERE target IS NOT NULL AND target <> ''
ORDER BY source_id, idx;
