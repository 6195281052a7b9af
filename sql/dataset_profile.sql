-- What one dataset's annotations hold, per split: clips, labelled clips and their distinct labels,
-- clips with a question, clips with timed events (flows.user_data.describe: which tasks can run).
SELECT s.split,
       count(DISTINCT s.source_id) AS n_clips,
       count(DISTINCT a.source_id) FILTER (WHERE a.task = 'classification') AS n_labelled,
       list(DISTINCT a.label) FILTER (WHERE a.task = 'classification') AS labels,
       count(DISTINCT a.source_id) FILTER (WHERE a.task = 'vqa') AS n_vqa,
       count(DISTINCT a.source_id) FILTER (WHERE a.task = 'event') AS n_events
FROM splits s
LEFT JOIN annotations a ON a.source_id = s.source_id
WHERE s.dataset = $dataset
GROUP BY s.split
ORDER BY s.split
