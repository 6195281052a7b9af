-- The sources of one split of one dataset with their whole-clip caption and class label.
SELECT
    s.source_id,
    s.path,
    s.content_hash,
    s.kind,
    s.duration,
    s.fps,
    s.width,
    s.height,
    caption.text AS caption,
    class.label AS label
FROM splits AS sp
JOIN sources AS s ON s.source_id = sp.source_id
LEFT JOIN annotations AS caption
    ON caption.source_id = s.source_id AND caption.task = 'caption' AND caption.idx = 0
LEFT JOIN annotations AS class
    ON class.source_id = s.source_id AND class.task = 'classification' AND class.idx = 0
WHERE sp.dataset = $dataset AND sp.split = $split
ORDER BY s.source_id;
