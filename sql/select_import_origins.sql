-- Every annotation file imported so far, with how (preprocessing.retry matches failures to them).
SELECT origin, kind, dataset, root, options FROM import_origins
WHERE $kind IS NULL OR kind = $kind
ORDER BY origin;
