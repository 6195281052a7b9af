-- Timestamped event captions of the clips of one split that have at least $min_events events,
-- in clip order then time order (the dense ground truth of the selective-decoding benchmark).
SELECT s.source_id, s.path, s.duration, a.idx, a.start_s, a.end_s, a.text
FROM splits AS sp
JOIN sources AS s ON s.source_id = sp.source_id
JOIN annotations AS a ON a.source_id = s.source_id AND a.task = 'event'
WHERE sp.dataset = $dataset AND sp.split = $split
  AND s.source_id IN (
      SELECT source_id FROM annotations WHERE task = 'event'
      GROUP BY source_id HAVING count(*) >= $min_events)
ORDER BY s.source_id, a.idx;
