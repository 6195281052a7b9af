INSERT INTO cache_shards (cache_key, shard_idx, path, format, n_samples, bytes)
VALUES ($cache_key, $shard_idx, $path, $format, $n_samples, $bytes);
