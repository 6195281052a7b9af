SELECT path, stage, error, recorded_at FROM failures
WHERE $stage IS NULL OR stage = $stage
ORDER BY stage, path;
