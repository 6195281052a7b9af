-- Remember how an annotation file was imported (the latest import of it wins).
INSERT INTO import_origins (origin, kind, dataset, root, options)
VALUES ($origin, $kind, $dataset, $root, $options)
ON CONFLICT (origin) DO UPDATE SET
    kind = excluded.kind,
    dataset = excluded.dataset,
    root = excluded.root,
    options = excluded.options;
