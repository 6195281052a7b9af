SELECT path, note, recorded_at FROM import_notes
WHERE $prefix IS NULL OR starts_with(path, $prefix)
ORDER BY path;
