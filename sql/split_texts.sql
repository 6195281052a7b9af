-- Distinct caption and event texts of one split: what a retrieval decoder can say.
SELECT DISTINCT a.text
FROM annotations AS a
JOIN splits AS sp ON sp.source_id = a.source_id
WHERE sp.dataset = $dataset AND sp.split = $split
  AND a.task IN ('event', 'caption') AND a.text IS NOT NULL
ORDER BY a.text;
