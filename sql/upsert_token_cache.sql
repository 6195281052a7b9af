-- A cache key names its content: recording it again updates where it lives and the config
-- it was written with (the sidecar beside the cache is the full record).
INSERT INTO token_caches (cache_key, encoder_id, config_json, path, n_samples, num_tokens, created_at)
VALUES ($cache_key, $encoder_id, $config_json, $path, $n_samples, $num_tokens, current_timestamp)
ON CONFLICT (cache_key) DO UPDATE SET
    config_json = excluded.config_json,
    path = excluded.path,
    n_samples = excluded.n_samples,
    num_tokens = excluded.num_tokens;
