DELETE FROM mix_components WHERE mix_name = $mix_name;
