-- Members are replaced whole when a cache is recorded again (a rewrite may hold other samples).
DELETE FROM cache_members WHERE cache_key = $cache_key;
