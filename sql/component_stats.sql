-- Per component of a mix: items (annotations), distinct sources, and tokens of those sources
-- in the newest token cache that holds each of them (NULL when none is cached).
WITH items AS (
    SELECT c.component, a.source_id
    FROM mix_components AS c
    JOIN splits AS sp ON sp.dataset = c.dataset AND sp.split = c.split
    JOIN annotations AS a ON a.source_id = sp.source_id AND a.task = c.task
    WHERE c.mix_name = $mix_name
),
source_tokens AS (
    SELECT m.source_id, arg_max(t.num_tokens, t.created_at) AS num_tokens
    FROM cache_members AS m JOIN token_caches AS t ON t.cache_key = m.cache_key
    GROUP BY m.source_id
)
SELECT c.component, c.task, c.dataset, c.split, c.weight,
       count(i.source_id) AS n_items,
       count(DISTINCT i.source_id) AS n_sources,
       sum(st.num_tokens) AS n_tokens
FROM mix_components AS c
LEFT JOIN items AS i ON i.component = c.component
LEFT JOIN source_tokens AS st ON st.source_id = i.source_id
WHERE c.mix_name = $mix_name
GROUP BY c.component, c.task, c.dataset, c.split, c.weight
ORDER BY c.component;
