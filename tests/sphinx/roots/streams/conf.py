extensions = ["myst_nb", "sphinx_design", "qwen_docs_helpers.sphinx"]
exclude_patterns = ["_build"]
html_theme = "basic"
nb_execution_mode = "force"
nb_execution_timeout = 60
nb_execution_raise_on_error = True
nb_merge_streams = True  # as the site sets it

# This fixture tests stream outputs alone: no model preparation, no stamp cell.
qwen_docs_prepare_models = False
qwen_docs_stamp = False
