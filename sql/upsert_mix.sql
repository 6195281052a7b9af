INSERT INTO mixes (mix_name, description) VALUES ($mix_name, $description)
ON CONFLICT (mix_name) DO UPDATE SET description = excluded.description;
