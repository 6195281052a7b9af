-- Sources of one dataset whose files lie outside a folder: another generated corpus imported under
-- the same dataset name (flows.data.import_manifest refuses to mix two: they share clip ids).
SELECT count(*) AS n, min(s.path) AS example
FROM sources AS s
JOIN splits AS sp ON sp.source_id = s.source_id
WHERE sp.dataset = $dataset AND NOT starts_with(s.path, $prefix);
