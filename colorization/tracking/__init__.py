"""MLflow lives here and nowhere else in the package.

`runs` records training runs (params, metrics, sample images, the logged model);
`registry` (model versions and aliases) is a separate module. Import these lazily: the
training path must run on a machine without mlflow installed.
"""
