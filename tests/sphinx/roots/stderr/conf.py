extensions = ["myst_nb", "sphinx_design", "qwen_docs_helpers.sphinx"]
exclude_patterns = ["_build"]
html_theme = "basic"
nb_execution_mode = "force"
nb_execution_timeout = 60
nb_output_stderr = "show"  # as the site sets it
qwen_docs_stderr = "warn"

# This fixture tests the stderr check alone: no model preparation, no stamp cell.
qwen_docs_prepare_models = False
qwen_docs_stamp = False
