-- Drop a source's annotations before writing the new set (annotations are replaced whole).
DELETE FROM annotations WHERE source_id = $source_id;
