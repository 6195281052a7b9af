INSERT INTO mix_components (mix_name, component, task, dataset, split, weight)
VALUES ($mix_name, $component, $task, $dataset, $split, $weight);
