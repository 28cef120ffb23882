extensions = ["myst_nb", "sphinx_design", "qwen_docs_helpers.sphinx"]
myst_enable_extensions = ["colon_fence"]
exclude_patterns = ["_build"]
html_theme = "basic"
nb_execution_mode = "force"
nb_execution_timeout = 60
nb_execution_raise_on_error = True
nb_execution_show_tb = True
nb_merge_streams = True  # as the site sets it: under load one print can reach the notebook in several outputs

# This fixture tests nested cells alone: no model preparation, no stamp cell.
qwen_docs_prepare_models = False
qwen_docs_stamp = False
# Its tabs read each other's names on purpose (to show the one kernel): no reader-paths check.
qwen_docs_reader_paths = False
