SELECT encoder_id FROM token_caches WHERE cache_key = $cache_key;
