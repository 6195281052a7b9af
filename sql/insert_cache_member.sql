INSERT INTO cache_members (cache_key, source_id)
VALUES ($cache_key, $source_id)
ON CONFLICT (cache_key, source_id) DO NOTHING;
