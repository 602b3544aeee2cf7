"""What a study searches: the types of a search space, reading its YAML file, its strata."""
