DELETE FROM cache_shards WHERE cache_key = $cache_key;
