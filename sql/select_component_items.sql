-- The annotations one mix component draws from, in a stable order (source_id, idx).
SELECT a.source_id, a.idx
FROM annotations AS a
JOIN splits AS sp ON sp.source_id = a.source_id
WHERE a.task = $task AND sp.dataset = $dataset AND sp.split = $split
ORDER BY a.source_id, a.idx;
