-- What the manifest holds for one source, to decide whether a re-import has work to do.
SELECT s.content_hash, s.path, s.record_hash, sp.split
FROM sources AS s
LEFT JOIN splits AS sp ON sp.source_id = s.source_id AND sp.dataset = $dataset
WHERE s.source_id = $source_id;
