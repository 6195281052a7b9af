-- Sources of one dataset whose files are not in a given corpus folder (matched by the folder's name,
-- so a state dir moved elsewhere still matches): another generated corpus imported under the same
-- dataset name (flows.data.import_manifest refuses to mix two: they share clip ids).
SELECT count(*) AS n, min(s.path) AS example
FROM sources AS s
JOIN splits AS sp ON sp.source_id = s.source_id
WHERE sp.dataset = $dataset AND NOT contains(s.path, $folder_marker);
