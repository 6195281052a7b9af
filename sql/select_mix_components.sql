SELECT component, task, dataset, split, weight
FROM mix_components WHERE mix_name = $mix_name ORDER BY component;
