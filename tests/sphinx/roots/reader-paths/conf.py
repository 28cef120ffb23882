extensions = ["myst_nb", "sphinx_design", "qwen_docs_helpers.sphinx"]
myst_enable_extensions = ["colon_fence"]
exclude_patterns = ["_build"]
html_theme = "basic"
nb_execution_mode = "force"
nb_execution_timeout = 60
nb_execution_raise_on_error = True

# This fixture tests the reader-paths check alone: no model preparation, no stamp cell, no downloads.
qwen_docs_prepare_models = False
qwen_docs_stamp = False
qwen_docs_downloads = False
