INSERT INTO splits (source_id, dataset, split)
VALUES ($source_id, $dataset, $split)
ON CONFLICT (source_id, dataset) DO UPDATE SET split = excluded.split;
